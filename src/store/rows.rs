//! One mapping from a result row to each row type, for both backends: the
//! stores' rows implement [`Columns`] (typed access by column index) and the
//! functions here read the column lists of `sql.rs` in their order.

use super::{AccountRow, BudgetRow, HoldRow, HoldStatus, KeyRow, KeyStanding, RateCounts};
use crate::error::{Error, Result};
use crate::money::Credits;
use crate::organisations::Allowance;
use crate::pricing::PriceVersion;
use crate::store::sql::KEY_COL_COUNT;
use crate::types::{
    Entry, EntryId, EntryKind, Grant, GrantCategory, GrantId, HoldId, KeyId, ModelPrice, SpendWindow, Timestamp,
};
use uuid::Uuid;

/// A result row read by column index. SQLite keeps UUIDs as text and
/// booleans as integers; PostgreSQL as `uuid` and `boolean`: each backend
/// converts here, so the mappers below see one shape.
pub(crate) trait Columns {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    /// An INTEGER (32-bit on PostgreSQL).
    fn int32(&self, i: usize) -> Result<i32>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn flag(&self, i: usize) -> Result<bool>;
    fn uuid(&self, i: usize) -> Result<Uuid>;
    fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>>;
}

/// A value the database holds that this library cannot read.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("bad {what} in database: {e}"))
}

/// An entry from `ENTRY_COLS`.
pub(crate) fn entry<R: Columns + ?Sized>(r: &R) -> Result<Entry> {
    let metadata = r
        .opt_text(14)?
        .map(|m| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m).map_err(|e| corrupt("metadata", e))
        })
        .transpose()?;
    Ok(Entry {
        id: EntryId(r.uuid(0)?),
        seq: r.int(1)?,
        user_id: r.text(2)?,
        kind: EntryKind::parse(&r.text(3)?).map_err(|e| corrupt("kind", e))?,
        amount: Credits::from_micros(r.int(4)?),
        balance_after: Credits::from_micros(r.int(5)?),
        idempotency_key: r.opt_text(6)?,
        reference: r.opt_text(7)?,
        api_key_id: r.opt_uuid(8)?.map(KeyId),
        input_tokens: r.opt_int(9)?,
        output_tokens: r.opt_int(10)?,
        model: r.opt_text(11)?,
        amount_minor: r.opt_int(12)?,
        currency: r.opt_text(13)?,
        metadata,
        created_at: Timestamp(r.int(15)?),
        replayed: false,
        member_id: r.opt_text(16)?,
        project: r.opt_text(17)?,
        cached_input_tokens: r.opt_int(18)?,
        cache_write_tokens: r.opt_int(19)?,
        // The rates are written together, or not at all (`insert_entry`).
        price: match r.opt_int(20)? {
            None => None,
            Some(_) => Some(price(r, 20)?),
        },
    })
}

/// A key from `KEY_COLS`.
pub(crate) fn key<R: Columns + ?Sized>(r: &R) -> Result<KeyRow> {
    let time = |i| r.opt_int(i).map(|t| t.map(Timestamp));
    Ok(KeyRow {
        id: KeyId(r.uuid(0)?),
        user_id: r.text(1)?,
        name: r.opt_text(2)?,
        prefix: r.opt_text(3)?,
        legacy: r.flag(4)?,
        created_at: Timestamp(r.int(5)?),
        last_used_at: time(6)?,
        revoked_at: time(7)?,
        expires_at: time(8)?,
        disabled_at: time(9)?,
        rotated_to: r.opt_uuid(10)?.map(KeyId),
        spend_limit: r.opt_int(11)?.map(Credits::from_micros),
        spend_window: r
            .opt_text(12)?
            .map(|w| SpendWindow::parse(&w).map_err(|e| corrupt("spend window", e)))
            .transpose()?,
        spend: match (r.opt_int(13)?, r.opt_int(14)?) {
            (Some(end), Some(spent)) => Some((Timestamp(end), Credits::from_micros(spent))),
            _ => None,
        },
        org_id: r.opt_text(15)?,
        project: r.opt_text(16)?,
    })
}

/// A row of the verify statement (`sql::verify`): the key, then its standing.
pub(crate) fn key_standing<R: Columns + ?Sized>(r: &R) -> Result<KeyStanding> {
    let n = KEY_COL_COUNT;
    let credits = |i| r.opt_int(i).map(|c| c.map(Credits::from_micros));
    Ok(KeyStanding {
        key: key(r)?,
        available: Credits::from_micros(r.int(n)?),
        key_remaining: credits(n + 1)?,
        rate: if r.flag(n + 2)? {
            Some(RateCounts {
                requests_per_minute: r.opt_int(n + 3)?,
                tokens_per_minute: r.opt_int(n + 4)?,
                window: r.int(n + 5)?,
                tokens: r.int(n + 6)?,
            })
        } else {
            None
        },
        member_remaining: credits(n + 7)?,
        project_remaining: credits(n + 8)?,
        refill_at: r.opt_int(n + 9)?.map(Timestamp),
        refill_due: r.flag(n + 10)?,
        topup_threshold: r.opt_int(n + 11)?.map(Credits::from_micros),
    })
}

/// A hold from `HOLD_COLS`.
pub(crate) fn hold<R: Columns + ?Sized>(r: &R) -> Result<HoldRow> {
    Ok(HoldRow {
        id: HoldId(r.uuid(0)?),
        user_id: r.text(1)?,
        api_key_id: KeyId(r.uuid(2)?),
        amount: Credits::from_micros(r.int(3)?),
        model: r.opt_text(4)?,
        request_id: r.opt_text(5)?,
        status: HoldStatus::parse(&r.text(6)?).map_err(|e| corrupt("hold status", e))?,
        expires_at: Timestamp(r.int(7)?),
        created_at: Timestamp(r.int(8)?),
        // The rates are written together, or not at all (a hold of credits).
        price: match r.opt_int(9)? {
            None => None,
            Some(_) => Some(price(r, 9)?),
        },
    })
}

/// A grant from `GRANT_COLS`.
pub(crate) fn grant<R: Columns + ?Sized>(r: &R) -> Result<Grant> {
    Ok(Grant {
        grant_id: GrantId(r.int(0)?),
        user_id: r.text(1)?,
        source_entry_id: r.opt_uuid(2)?.map(EntryId),
        category: GrantCategory::parse(&r.text(3)?).map_err(|e| corrupt("grant category", e))?,
        priority: r.int32(4)?,
        amount: Credits::from_micros(r.int(5)?),
        remaining: Credits::from_micros(r.int(6)?),
        expires_at: r.opt_int(7)?.map(Timestamp),
        created_at: Timestamp(r.int(8)?),
        payment_id: r.opt_text(9)?,
        member_id: r.opt_text(10)?,
        api_key_id: r.opt_uuid(11)?.map(KeyId),
        allowance_id: r.opt_int(12)?,
    })
}

/// A budget from `BUDGET_COLS`.
pub(crate) fn budget<R: Columns + ?Sized>(r: &R) -> Result<BudgetRow> {
    Ok(BudgetRow {
        scope: r.text(0)?,
        name: r.text(1)?,
        limit: Credits::from_micros(r.int(2)?),
        window: SpendWindow::parse(&r.text(3)?).map_err(|e| corrupt("budget window", e))?,
        low_threshold: r.opt_int(4)?.map(Credits::from_micros),
        window_start: Timestamp(r.int(5)?),
        window_end: Timestamp(r.int(6)?),
        spent: Credits::from_micros(r.int(7)?),
    })
}

/// An allowance from `ALLOWANCE_COLS`.
pub(crate) fn allowance<R: Columns + ?Sized>(r: &R) -> Result<Allowance> {
    Ok(Allowance {
        allowance_id: r.int(0)?,
        user_id: r.text(1)?,
        member_id: r.opt_text(2)?,
        api_key_id: r.opt_uuid(3)?.map(KeyId),
        amount: Credits::from_micros(r.int(4)?),
        period: SpendWindow::parse(&r.text(5)?).map_err(|e| corrupt("allowance period", e))?,
        rollover_cap: r.opt_int(6)?.map(Credits::from_micros),
        next_refill_at: Timestamp(r.int(7)?),
        created_at: Timestamp(r.int(8)?),
    })
}

/// An account from `ACCOUNT_COLS`.
pub(crate) fn account<R: Columns + ?Sized>(r: &R) -> Result<AccountRow> {
    Ok(AccountRow {
        balance: Credits::from_micros(r.int(0)?),
        first_key_issued: r.flag(1)?,
        created_at: Timestamp(r.int(2)?),
        min_balance: Credits::from_micros(r.int(3)?),
        refill_at: r.opt_int(4)?.map(Timestamp),
    })
}

/// A model price from (input_per_1k, output_per_1k) at column `first`.
/// A price from `PRICE_COLS` starting at column `first`.
pub(crate) fn price<R: Columns + ?Sized>(r: &R, first: usize) -> Result<ModelPrice> {
    let credits = |i| r.int(i).map(Credits::from_micros);
    let opt = |i| r.opt_int(i).map(|v| v.map(Credits::from_micros));
    Ok(ModelPrice {
        input_per_1k: credits(first)?,
        output_per_1k: credits(first + 1)?,
        cached_input_per_1k: opt(first + 2)?,
        cache_write_per_1k: opt(first + 3)?,
        request_fee: credits(first + 4)?,
    })
}

/// A price version from `model, effective_at, set_at, PRICE_COLS`.
pub(crate) fn price_version<R: Columns + ?Sized>(r: &R) -> Result<PriceVersion> {
    Ok(PriceVersion {
        model: r.text(0)?,
        effective_at: Timestamp(r.int(1)?),
        set_at: Timestamp(r.int(2)?),
        price: price(r, 3)?,
    })
}

/// Test rows: a vector of optional texts, read the way SQLite's are.
#[cfg(test)]
impl Columns for Vec<Option<&str>> {
    fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| corrupt("integer", "NULL"))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self[i].map(|v| v.parse().map_err(|e| corrupt("integer", e))).transpose()
    }
    fn int32(&self, i: usize) -> Result<i32> {
        i32::try_from(self.int(i)?).map_err(|e| corrupt("integer", e))
    }
    fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| corrupt("text", "NULL"))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self[i].map(str::to_string))
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }
    fn uuid(&self, i: usize) -> Result<Uuid> {
        Uuid::try_parse(&self.text(i)?).map_err(|e| corrupt("uuid", e))
    }
    fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>> {
        self.opt_text(i)?.map(|s| Uuid::try_parse(&s).map_err(|e| corrupt("uuid", e))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_row_maps_and_a_corrupt_one_is_refused() {
        let id = EntryId::at(Timestamp::now()).0.to_string();
        let row = vec![
            Some("7"),
            Some("u"),
            Some(id.as_str()),
            Some("promotional"),
            Some("2"),
            Some("100"),
            Some("40"),
            None,
            Some("5"),
            Some("pay"),
            None,
            None,
            Some("3"),
        ];
        let g = grant(&row).unwrap();
        assert_eq!((g.grant_id, g.priority, g.remaining.micros(), g.expires_at), (GrantId(7), 2, 40, None));
        assert_eq!(g.source_entry_id.map(|e| e.0.to_string()), Some(id.clone()));
        assert_eq!(g.category, GrantCategory::Promotional);
        let mut bad = row.clone();
        bad[3] = Some("gift");
        assert!(matches!(grant(&bad), Err(Error::Storage(m)) if m.contains("grant category")));
    }
}
