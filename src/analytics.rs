//! Usage analytics and account statements (docs/analytics.md): the public
//! types, their checks, and their one JSON and one CSV form, which every
//! front door (Rust, Python, C, the CLI) hands out unchanged.
//!
//! JSON follows the C ABI's shapes: amounts as integer micro-credits named
//! `<field>_micros`, RFC 3339 UTC timestamps. CSV is for spreadsheets:
//! amounts as exact decimal credits, and text cells that a spreadsheet
//! would run as a formula prefixed with `'`.

use crate::error::{Error, Result};
use crate::limits::MAX_SUMMARY_ROWS;
use crate::money::Credits;
use crate::pricing::ModelPrice;
use crate::types::{EntryKind, KeyId, Timestamp, truncate};
use crate::validate;
use serde_json::{Value, json};

/// The entries a usage summary counts (`store/pricing.rs` writes it into
/// its statement; the rollup path below filters the daily totals by it).
pub(crate) const SUMMARY_KIND: EntryKind = EntryKind::Usage;

/// What a usage summary groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageGroup {
    /// The UTC day of the charge.
    Day,
    Model,
    Key,
    /// The member of an organisation that spent it (None outside one).
    Member,
    /// The organisation project of the key (None outside one).
    Project,
}

impl UsageGroup {
    pub const ALL: [UsageGroup; 5] =
        [UsageGroup::Day, UsageGroup::Model, UsageGroup::Key, UsageGroup::Member, UsageGroup::Project];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroup::Day => "day",
            UsageGroup::Model => "model",
            UsageGroup::Key => "key",
            UsageGroup::Member => "member",
            UsageGroup::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Result<UsageGroup> {
        UsageGroup::ALL.into_iter().find(|g| g.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = UsageGroup::ALL.iter().map(|g| g.as_str()).collect();
            Error::invalid(format!("group_by: unknown group {:?}, expected one of {}", truncate(s), names.join(", ")))
        })
    }
}

/// Which usage a summary counts: every filter given must match; the range
/// is `[since, until)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// The paying account (an organisation's members' usage is its own).
    pub user_id: Option<String>,
    pub api_key_id: Option<KeyId>,
    pub model: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// In the order given; each at most once. Empty: one row of totals.
    pub group_by: Vec<UsageGroup>,
}

impl UsageQuery {
    pub(crate) fn validate(&self) -> Result<()> {
        validate::opt_text("user_id", self.user_id.as_deref())?;
        validate::opt_text("model", self.model.as_deref())?;
        check_range(self.since, self.until)?;
        for (i, g) in self.group_by.iter().enumerate() {
            if self.group_by[..i].contains(g) {
                return Err(Error::invalid(format!("group_by: group {:?} is given twice", g.as_str())));
            }
        }
        Ok(())
    }
}

/// `since` must not be after `until`.
pub(crate) fn check_range(since: Option<Timestamp>, until: Option<Timestamp>) -> Result<()> {
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(Error::invalid(format!(
            "the range is inverted: since {} is after until {}",
            s.to_rfc3339(),
            u.to_rfc3339()
        )));
    }
    Ok(())
}

/// One group of a usage summary: the grouped fields are set, the others
/// None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The UTC midnight starting the day.
    pub day: Option<Timestamp>,
    pub model: Option<String>,
    pub api_key_id: Option<KeyId>,
    pub member_id: Option<String>,
    pub project: Option<String>,
    /// Usage entries (charges) counted.
    pub requests: u64,
    /// The whole prompts, cache reads and writes included.
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    /// What the charges took.
    pub credits: Credits,
}

impl UsageRow {
    /// A row of no group and no usage, for a summary to fill.
    pub(crate) fn empty() -> UsageRow {
        UsageRow {
            day: None,
            model: None,
            api_key_id: None,
            member_id: None,
            project: None,
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            credits: Credits::ZERO,
        }
    }
}

/// One line of a statement: a kind of movement, and for usage one model at
/// one set of rates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    pub kind: EntryKind,
    /// Usage lines only.
    pub model: Option<String>,
    /// The rates of a usage line (None: charges of a given amount).
    pub price: Option<ModelPrice>,
    pub entries: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    /// The line's total movement (negative: out of the account).
    pub amount: Credits,
}

/// An account's movements over `[since, until)`: `opening_balance` plus
/// every line's amount is `closing_balance`, exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub user_id: String,
    pub since: Timestamp,
    pub until: Timestamp,
    /// The balance before `since`: the sum of the entries created before it.
    pub opening_balance: Credits,
    /// The balance before `until`.
    pub closing_balance: Credits,
    /// By kind (purchases, grants, allowances, usage by model, expiries,
    /// reversals, ...), then model and rates.
    pub lines: Vec<StatementLine>,
}

impl Statement {
    /// The sum of the lines' amounts (summed in i128: only the total must
    /// fit).
    pub fn movements(&self) -> Result<Credits> {
        let sum: i128 = self.lines.iter().map(|l| i128::from(l.amount.micros())).sum();
        i64::try_from(sum)
            .map(Credits::from_micros)
            .map_err(|_| Error::invalid(format!("the movements of {:?} exceed the largest amount", self.user_id)))
    }

    pub fn to_json(&self) -> String {
        json!({
            "user_id": self.user_id,
            "since": self.since.to_rfc3339(),
            "until": self.until.to_rfc3339(),
            "opening_balance_micros": self.opening_balance.micros(),
            "closing_balance_micros": self.closing_balance.micros(),
            "lines": self.lines.iter().map(line_json).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// One header row, an `opening` row, one row per line and a `closing`
    /// row; amounts in credits.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut row = |cells: Vec<String>| {
            // Writing to a Vec cannot fail.
            let _ = w.write_record(cells);
        };
        row(STATEMENT_CSV_HEADER.iter().map(|s| s.to_string()).collect());
        let edge = |what: &str, amount: Credits| {
            let mut cells = vec![String::new(); STATEMENT_CSV_HEADER.len()];
            cells[0] = what.to_string();
            cells[STATEMENT_CSV_HEADER.len() - 1] = amount.to_string();
            cells
        };
        row(edge("opening", self.opening_balance));
        for l in &self.lines {
            let rate = |r: Option<Credits>| r.map(|c| c.to_string()).unwrap_or_default();
            row(vec![
                l.kind.as_str().to_string(),
                cell(l.model.as_deref().unwrap_or("")),
                rate(l.price.map(|p| p.input_per_1k)),
                rate(l.price.map(|p| p.output_per_1k)),
                rate(l.price.and_then(|p| p.cached_input_per_1k)),
                rate(l.price.and_then(|p| p.cache_write_per_1k)),
                rate(l.price.map(|p| p.request_fee)),
                l.entries.to_string(),
                l.input_tokens.to_string(),
                l.output_tokens.to_string(),
                l.cached_input_tokens.to_string(),
                l.cache_write_tokens.to_string(),
                l.amount.to_string(),
            ]);
        }
        row(edge("closing", self.closing_balance));
        finish(w)
    }
}

const STATEMENT_CSV_HEADER: [&str; 13] = [
    "kind",
    "model",
    "input_per_1k",
    "output_per_1k",
    "cached_input_per_1k",
    "cache_write_per_1k",
    "request_fee",
    "entries",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "amount",
];

fn line_json(l: &StatementLine) -> Value {
    json!({
        "kind": l.kind.as_str(),
        "model": l.model,
        "price": l.price.map(|p| price_json(&p)),
        "entries": l.entries,
        "input_tokens": l.input_tokens,
        "output_tokens": l.output_tokens,
        "cached_input_tokens": l.cached_input_tokens,
        "cache_write_tokens": l.cache_write_tokens,
        "amount_micros": l.amount.micros(),
    })
}

/// A price in the JSON shapes' form.
pub fn price_json(p: &ModelPrice) -> Value {
    json!({
        "input_per_1k_micros": p.input_per_1k.micros(),
        "output_per_1k_micros": p.output_per_1k.micros(),
        "cached_input_per_1k_micros": p.cached_input_per_1k.map(Credits::micros),
        "cache_write_per_1k_micros": p.cache_write_per_1k.map(Credits::micros),
        "request_fee_micros": p.request_fee.micros(),
    })
}

/// Usage rows as a JSON array: the fields of `group_by` (null where a row's
/// group has none, e.g. calls without a model), then the counts.
pub fn usage_rows_json(group_by: &[UsageGroup], rows: &[UsageRow]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            for g in group_by {
                o.insert(g.as_str().into(), group_cell(r, *g).map_or(Value::Null, Value::String));
            }
            o.insert("requests".into(), r.requests.into());
            o.insert("input_tokens".into(), r.input_tokens.into());
            o.insert("output_tokens".into(), r.output_tokens.into());
            o.insert("cached_input_tokens".into(), r.cached_input_tokens.into());
            o.insert("cache_write_tokens".into(), r.cache_write_tokens.into());
            o.insert("credits_micros".into(), r.credits.micros().into());
            Value::Object(o)
        })
        .collect();
    Value::Array(rows).to_string()
}

/// Usage rows as CSV: the grouped columns of `group_by`, in its order, then
/// the counts; credits in decimal.
pub fn usage_rows_csv(group_by: &[UsageGroup], rows: &[UsageRow]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let counts = ["requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "credits"];
    let header = group_by.iter().map(|g| g.as_str()).chain(counts);
    let _ = w.write_record(header);
    for r in rows {
        let mut out: Vec<String> =
            group_by.iter().map(|g| group_cell(r, *g).as_deref().map(cell).unwrap_or_default()).collect();
        out.extend([
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cached_input_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            r.credits.to_string(),
        ]);
        let _ = w.write_record(out);
    }
    finish(w)
}

/// A row's value of group `g` as text (the day as `YYYY-MM-DD`).
fn group_cell(r: &UsageRow, g: UsageGroup) -> Option<String> {
    match g {
        UsageGroup::Day => r.day.map(|d| d.to_rfc3339()[..10].to_string()),
        UsageGroup::Model => r.model.clone(),
        UsageGroup::Key => r.api_key_id.map(|k| k.to_string()),
        UsageGroup::Member => r.member_id.clone(),
        UsageGroup::Project => r.project.clone(),
    }
}

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return gets a leading `'`.
fn cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

fn finish(w: csv::Writer<Vec<u8>>) -> String {
    // The cells are valid UTF-8 strings, so the bytes are too.
    w.into_inner().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Rows past the limit are refused, not cut: a partial summary would
/// mislead.
pub(crate) fn check_row_count(n: usize) -> Result<()> {
    if n > MAX_SUMMARY_ROWS as usize {
        return Err(Error::LimitReached {
            limit: "max_summary_rows",
            detail: format!("the summary has more than {MAX_SUMMARY_ROWS} rows: narrow the range or group by less"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_bad_ones_are_named() {
        for g in UsageGroup::ALL {
            assert_eq!(UsageGroup::parse(g.as_str()).unwrap(), g);
        }
        let e = UsageGroup::parse("week").unwrap_err().to_string();
        assert!(e.contains("week") && e.contains("day, model, key, member, project"), "{e}");
        let twice = UsageQuery { group_by: vec![UsageGroup::Day, UsageGroup::Day], ..UsageQuery::default() };
        assert!(twice.validate().is_err());
        let inverted = UsageQuery { since: Some(Timestamp(2)), until: Some(Timestamp(1)), ..UsageQuery::default() };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("gpt-4o"), "gpt-4o");
        let row = UsageRow {
            day: None,
            model: Some("a,\"b\"".into()),
            api_key_id: None,
            member_id: None,
            project: None,
            requests: 2,
            input_tokens: 3,
            output_tokens: 4,
            cached_input_tokens: 1,
            cache_write_tokens: 0,
            credits: Credits::from_micros(1_500_000),
        };
        let csv = usage_rows_csv(&[UsageGroup::Model], std::slice::from_ref(&row));
        assert_eq!(
            csv,
            "model,requests,input_tokens,output_tokens,cached_input_tokens,cache_write_tokens,credits\n\
             \"a,\"\"b\"\"\",2,3,4,1,0,1.5\n"
        );
        let json: Value =
            serde_json::from_str(&usage_rows_json(&[UsageGroup::Model, UsageGroup::Member], &[row])).unwrap();
        assert_eq!(json[0]["model"], "a,\"b\"");
        assert_eq!(json[0]["member"], Value::Null, "a grouped field without a value is null, not absent");
        assert_eq!(json[0]["credits_micros"], 1_500_000);
        assert!(json[0].get("day").is_none());
    }
}
