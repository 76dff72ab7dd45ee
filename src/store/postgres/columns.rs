//! PostgreSQL rows read through `rows.rs`: its result rows, and the JSON
//! arrays of the grants `lock_and_entry_by_key` reads ahead.

use crate::error::{Error, Result};
use crate::store::rows::{self, Columns, corrupt};
use crate::types::Grant;
use postgres::Row;
use postgres::types::FromSqlOwned;

pub(super) fn col<T: FromSqlOwned>(r: &Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| Error::Storage(format!("bad column {i} in PostgreSQL row: {e}")))
}

impl Columns for Row {
    fn int(&self, i: usize) -> Result<i64> {
        col(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        col(self, i)
    }
    fn int32(&self, i: usize) -> Result<i32> {
        col(self, i)
    }
    fn text(&self, i: usize) -> Result<String> {
        col(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        col(self, i)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        col(self, i)
    }
    fn uuid(&self, i: usize) -> Result<uuid::Uuid> {
        col(self, i)
    }
    fn opt_uuid(&self, i: usize) -> Result<Option<uuid::Uuid>> {
        col(self, i)
    }
}

/// A prefetched grant: the JSON array of its `GRANT_COLS`, read like a row.
struct JsonRow<'a>(&'a [serde_json::Value]);

impl JsonRow<'_> {
    fn bad(&self, i: usize) -> Error {
        corrupt("prefetched grant", format!("column {i} of {:?}", self.0))
    }

    fn opt<T>(&self, i: usize, f: impl FnOnce(&serde_json::Value) -> Option<T>) -> Result<Option<T>> {
        match self.0.get(i) {
            Some(serde_json::Value::Null) => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| self.bad(i)),
            None => Err(self.bad(i)),
        }
    }

    fn req<T>(&self, i: usize, f: impl FnOnce(&serde_json::Value) -> Option<T>) -> Result<T> {
        self.opt(i, f)?.ok_or_else(|| self.bad(i))
    }
}

impl Columns for JsonRow<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        self.req(i, serde_json::Value::as_i64)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.opt(i, serde_json::Value::as_i64)
    }
    fn int32(&self, i: usize) -> Result<i32> {
        i32::try_from(self.int(i)?).map_err(|_| self.bad(i))
    }
    fn text(&self, i: usize) -> Result<String> {
        self.req(i, |v| v.as_str().map(str::to_string))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.opt(i, |v| v.as_str().map(str::to_string))
    }
    fn flag(&self, i: usize) -> Result<bool> {
        self.req(i, serde_json::Value::as_bool)
    }
    fn uuid(&self, i: usize) -> Result<uuid::Uuid> {
        self.req(i, |v| v.as_str().and_then(|s| uuid::Uuid::try_parse(s).ok()))
    }
    fn opt_uuid(&self, i: usize) -> Result<Option<uuid::Uuid>> {
        self.opt(i, |v| v.as_str().and_then(|s| uuid::Uuid::try_parse(s).ok()))
    }
}

/// A grant of `live_grants` from the JSON array of its `GRANT_COLS`.
pub(super) fn grant_from_json(v: &serde_json::Value) -> Result<Grant> {
    let columns = v.as_array().filter(|a| a.len() == 13).ok_or_else(|| corrupt("prefetched grant", v))?;
    rows::grant(&JsonRow(columns))
}
