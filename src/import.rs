//! Moving an existing deployment over (docs/reference.md `import-users`): balances from
//! the host's own users table and its existing API keys, read from the same
//! database as the ledger (SQLite or PostgreSQL).
//!
//! Every balance becomes one `adjustment` (or `purchase`) entry keyed
//! `import:<user_id>` and every key a legacy key, so running the import twice
//! changes nothing. Everything is read and checked before the first write: a
//! bad row (a balance finer than a micro-credit, a malformed key) fails the
//! whole import with `InvalidArgument` and leaves the ledger as it was.

use crate::error::{Error, Result};
use crate::keys;
use crate::manager::CreditManager;
use crate::money::Credits;
use crate::types::{EntryKind, truncate};

/// How the host stored its API keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// The secret itself.
    Plain,
    /// The hex SHA-256 of the secret.
    Sha256,
}

/// Where the host's API keys are: `SELECT user_column, key_column FROM table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportKeys {
    pub table: String,
    pub user_column: String,
    pub key_column: String,
    pub format: KeyFormat,
}

impl Default for ImportKeys {
    fn default() -> Self {
        ImportKeys {
            table: "api_keys".into(),
            user_column: "user_id".into(),
            key_column: "key".into(),
            format: KeyFormat::Plain,
        }
    }
}

/// What to import: `SELECT id_column, balance_column FROM table`, and
/// optionally the keys. Names are plain identifiers (letters, digits, `_`;
/// optionally `schema.table`), quoted, so they match case-sensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportUsers {
    pub table: String,
    pub id_column: String,
    pub balance_column: String,
    /// `Adjustment` (default) or `Purchase`.
    pub kind: EntryKind,
    pub keys: Option<ImportKeys>,
}

impl Default for ImportUsers {
    /// The seed's deployment: `users(id, credit_balance)`.
    fn default() -> Self {
        ImportUsers {
            table: "users".into(),
            id_column: "id".into(),
            balance_column: "credit_balance".into(),
            kind: EntryKind::Adjustment,
            keys: None,
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows of the users table.
    pub users: u64,
    pub balances_imported: u64,
    /// Balances an earlier run had imported (replayed, unchanged).
    pub balances_already_imported: u64,
    /// Users with a zero or NULL balance: nothing to carry over.
    pub balances_skipped: u64,
    /// Keys registered as legacy keys (new, or already registered to the
    /// same user by an earlier run).
    pub keys: u64,
}

/// A quoted identifier, `"name"` or `"schema"."name"`.
fn ident(what: &str, v: &str) -> Result<String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
        return Err(Error::invalid(format!(
            "{what} must be an identifier (letters, digits, _; optionally schema.name), got {:?}",
            truncate(v)
        )));
    }
    Ok(parts.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join("."))
}

fn reading(what: &str, e: Error) -> Error {
    match e {
        Error::Storage(m) => Error::Storage(format!("cannot read the {what}: {m}")),
        other => other,
    }
}

/// An import key already used with another amount or kind: the host's
/// balance changed since the last import (or the kind did). Says so, and
/// what to do, instead of the generic idempotency message.
fn changed_since_import(e: Error, user: &str, amount: Credits) -> Error {
    match e {
        Error::IdempotencyConflict(_) => Error::IdempotencyConflict(format!(
            "user {:?} was already imported with another balance or kind, and the host table now says {amount}: \
             import-users carries each balance over once and does not sync later changes. Users listed before \
             this one were imported (a re-run skips them). The ledger is the source of truth since the first \
             import: move the difference with add_credits/deduct_credits (creditgate grant --kind adjustment), \
             or, for a rehearsal, import into a fresh ledger",
            truncate(user)
        )),
        other => other,
    }
}

impl CreditManager {
    /// Imports the host's balances (and, with `spec.keys`, its API keys as
    /// legacy keys) from tables in the ledger's own database. Idempotent.
    pub fn import_users(&self, spec: &ImportUsers) -> Result<ImportSummary> {
        if !matches!(spec.kind, EntryKind::Adjustment | EntryKind::Purchase) {
            return Err(Error::invalid(format!("import kind must be adjustment or purchase, got {}", spec.kind)));
        }
        // Check every identifier, then read and check every row, before
        // the first write.
        let users_sql = format!(
            "SELECT CAST({id} AS TEXT), CAST({bal} AS TEXT) FROM {table} ORDER BY 1",
            id = ident("id_column", &spec.id_column)?,
            bal = ident("balance_column", &spec.balance_column)?,
            table = ident("table", &spec.table)?,
        );
        let keys_sql = spec.keys.as_ref().map(keys_query).transpose()?;
        let mut summary = ImportSummary::default();
        let balances = self.read_balances(spec, &users_sql, &mut summary)?;
        let legacy = match (&spec.keys, keys_sql) {
            (Some(k), Some(sql)) => self.read_legacy_keys(k, &sql)?,
            _ => Vec::new(),
        };

        for (user, amount) in balances {
            let e =
                self.import_balance(&user, amount, spec.kind).map_err(|e| changed_since_import(e, &user, amount))?;
            if e.replayed {
                summary.balances_already_imported += 1;
            } else {
                summary.balances_imported += 1;
            }
        }
        if let Some(k) = &spec.keys {
            for (user, key) in legacy {
                match k.format {
                    KeyFormat::Plain => self.import_api_key(&user, Some(&key), None, None)?,
                    KeyFormat::Sha256 => self.import_api_key(&user, None, Some(&key.to_ascii_lowercase()), None)?,
                };
                summary.keys += 1;
            }
        }
        Ok(summary)
    }

    /// The users table's non-zero balances (read by `sql`), each checked;
    /// counts the users and the balances skipped (NULL or zero) in `summary`.
    fn read_balances(
        &self,
        spec: &ImportUsers,
        sql: &str,
        summary: &mut ImportSummary,
    ) -> Result<Vec<(String, Credits)>> {
        let rows = self.host_rows(sql, 2).map_err(|e| reading(&format!("users table {:?}", spec.table), e))?;
        summary.users = rows.len() as u64;
        let mut balances = Vec::new();
        for row in rows {
            let user = row[0].clone().ok_or_else(|| Error::invalid("a row of the users table has a NULL id"))?;
            crate::validate::text("user_id", &user)?;
            let Some(raw) = &row[1] else {
                summary.balances_skipped += 1;
                continue;
            };
            let amount: Credits = raw.trim().parse().map_err(|e: Error| {
                Error::invalid(format!(
                    "user {:?}: balance {:?} cannot be imported: {e}",
                    truncate(&user),
                    truncate(raw)
                ))
            })?;
            if amount == Credits::ZERO {
                summary.balances_skipped += 1;
                continue;
            }
            if spec.kind == EntryKind::Purchase && amount.is_negative() {
                return Err(Error::invalid(format!(
                    "user {:?} has a negative balance {amount}: import it as an adjustment",
                    truncate(&user)
                )));
            }
            balances.push((user, amount));
        }
        Ok(balances)
    }

    /// The keys table's (user, key) rows (read by `sql`), each key checked
    /// in its format.
    fn read_legacy_keys(&self, k: &ImportKeys, sql: &str) -> Result<Vec<(String, String)>> {
        let prefix = &self.config().api_key_prefix;
        let mut legacy = Vec::new();
        for row in self.host_rows(sql, 2).map_err(|e| reading(&format!("keys table {:?}", k.table), e))? {
            let user = row[0].clone().ok_or_else(|| Error::invalid("a row of the keys table has a NULL user"))?;
            crate::validate::text("user_id", &user)?;
            let key = row[1].clone().unwrap_or_default();
            match k.format {
                KeyFormat::Plain => {
                    keys::classify(prefix, &key).map_err(|e| {
                        Error::invalid(format!("a legacy key of user {:?} cannot be imported: {e}", truncate(&user)))
                    })?;
                }
                KeyFormat::Sha256 => keys::validate_sha256_hex(&key.to_ascii_lowercase())?,
            }
            legacy.push((user, key));
        }
        Ok(legacy)
    }
}

/// The query of the legacy keys table, its identifiers checked.
fn keys_query(k: &ImportKeys) -> Result<String> {
    Ok(format!(
        "SELECT CAST({u} AS TEXT), CAST({key} AS TEXT) FROM {t} WHERE {key} IS NOT NULL ORDER BY 1, 2",
        u = ident("key user_column", &k.user_column)?,
        key = ident("key_column", &k.key_column)?,
        t = ident("keys table", &k.table)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(ident("t", "users").unwrap(), "\"users\"");
        assert_eq!(ident("t", "app.Users_2").unwrap(), "\"app\".\"Users_2\"");
        for bad in ["", "1x", "a;b", "a b", "a.b.c", "x\"y", "a.", "é"] {
            assert!(ident("t", bad).is_err(), "{bad:?}");
        }
    }
}
