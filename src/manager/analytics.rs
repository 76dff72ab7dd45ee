//! Usage summaries and statements: reads of one snapshot, grouped by the
//! database (`store/pricing.rs`).

use super::CreditManager;
use crate::analytics::{Statement, UsageQuery, UsageRow, check_range};
use crate::error::{Error, Result};
use crate::types::{EntryKind, Timestamp};
use crate::validate;

/// The order of a statement's lines: money in, then out, then corrections.
const LINE_ORDER: [EntryKind; 10] = [
    EntryKind::Purchase,
    EntryKind::Grant,
    EntryKind::Allowance,
    EntryKind::Usage,
    EntryKind::Deduct,
    EntryKind::Refund,
    EntryKind::Expiry,
    EntryKind::Reversal,
    EntryKind::Reinstatement,
    EntryKind::Adjustment,
];

impl CreditManager {
    /// Requests, tokens and credits of the usage `q` selects, grouped by
    /// `q.group_by` (rows ordered by the groups). At most
    /// [`MAX_SUMMARY_ROWS`](crate::limits::MAX_SUMMARY_ROWS) rows, else
    /// `LimitReached`.
    pub fn usage_summary(&self, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        self.track((|| {
            q.validate()?;
            self.read(|tx| tx.usage_summary(q))
        })())
    }

    /// `user_id`'s movements over `[since, until)` with its opening and
    /// closing balances, from one snapshot: opening + lines = closing.
    pub fn statement(&self, user_id: &str, since: Timestamp, until: Timestamp) -> Result<Statement> {
        self.track((|| {
            let user = validate::text("user_id", user_id)?;
            check_range(Some(since), Some(until))?;
            self.read(|tx| {
                let (opening_balance, closing_balance) = tx.statement_edges(user, since, until)?;
                let mut lines = tx.statement_lines(user, since, until)?;
                lines.sort_by_key(|l| {
                    let rates = l.price.map(|p| {
                        let opt = |c: Option<crate::money::Credits>| c.map(|c| c.micros());
                        let (i, o, f) = (p.input_per_1k.micros(), p.output_per_1k.micros(), p.request_fee.micros());
                        (i, o, opt(p.cached_input_per_1k), opt(p.cache_write_per_1k), f)
                    });
                    (LINE_ORDER.iter().position(|k| *k == l.kind), l.model.clone(), rates)
                });
                let s = Statement { user_id: user.to_string(), since, until, opening_balance, closing_balance, lines };
                // The lines and the edges are separate sums of one snapshot.
                if s.opening_balance.checked_add(s.movements()?)? != s.closing_balance {
                    return Err(Error::Internal(format!("the statement of {user:?} does not reconcile")));
                }
                Ok(s)
            })
        })())
    }
}
