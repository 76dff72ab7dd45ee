//! Audit, metrics and the business report.

use super::CreditManager;
use super::rollup::Flows;
use crate::error::{Error, Result};
use crate::metrics::MetricsSnapshot;
use crate::money::Credits;
use crate::store::{DayKey, DaySums, Tx};
use crate::types::*;
use crate::validate::MAX_PAGE_LIMIT;
use std::collections::BTreeMap;

impl CreditManager {
    /// Checks `balance == sum(amount)`, gap-free seqs and the
    /// `balance_after` chain for every account, the grants, that each
    /// payment's reversals net of reinstatements stay within what it paid,
    /// and that every usage charge is its tokens at the rates its entry
    /// recorded (`usage_charge`), on one snapshot. Never modifies data.
    pub fn audit(&self) -> Result<AuditReport> {
        self.track(self.read(audit_all))
    }

    /// The test mode's audit of one account (`Config::check_invariants`),
    /// run in the write that just moved its balance, after the move: the
    /// checks of [`audit`](Self::audit) for `user` alone. A mismatch is
    /// `Internal`, so the write rolls back. Costly: the account's entries,
    /// plus the audit's ledger-wide scans of accounts, grants and payment
    /// problems filtered to `user` — for tests and checking runs on
    /// test-sized ledgers; nothing runs when the mode is off.
    pub(super) fn check_account(&self, tx: &mut dyn Tx, user: &str) -> Result<()> {
        let mut account = None;
        tx.scan_accounts(&mut |u, balance, last_seq| {
            if u == user {
                account = Some((balance, last_seq));
            }
        })?;
        let (balance, last_seq) = account.unwrap_or((0, 0));
        let mut mismatches = Vec::new();
        let mut chain = Chain::default();
        for (seq, amount, balance_after) in entries_oldest_first(tx, user)? {
            chain.step(user, seq, amount, balance_after, &mut mismatches);
        }
        chain.against_account(user, balance, last_seq, &mut mismatches);
        let mut lots = (0, 0);
        tx.scan_grants(&mut |u, sum, bad| {
            if u == user {
                lots = (sum, bad);
            }
        })?;
        grant_mismatches(user, balance, lots, &mut mismatches);
        for (u, problem, detail) in tx.payment_problems()? {
            if u == user {
                mismatches.push(AuditMismatch { user_id: u, problem, detail });
            }
        }
        usage_mismatches(tx, Some(user), &mut mismatches)?;
        if mismatches.is_empty() {
            return Ok(());
        }
        let found: Vec<String> = mismatches.iter().map(|m| format!("{}: {}", m.problem, m.detail)).collect();
        Err(Error::Internal(format!("invariant broken for user {:?}: {}", truncate(user), found.join("; "))))
    }

    /// Counter name → value.
    pub fn metrics(&self) -> Vec<(&'static str, u64)> {
        self.inner.metrics.snapshot()
    }

    pub fn metrics_prometheus(&self) -> String {
        self.inner.metrics.prometheus()
    }

    /// What `metrics_prometheus()` writes, as numbers (one consistent read).
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.inner.metrics.full_snapshot()
    }

    /// The business figures on one snapshot. Money flows (purchased, used,
    /// revenue, allowances issued) are the all-time daily totals (the
    /// closed days are rolled up first, `rollup.rs`); balances, counts and
    /// allowance expiries are read from the ledger.
    pub fn report(&self) -> Result<Report> {
        self.ensure_rolled_up();
        let figures = self.read(|tx| {
            // Balances come from the same snapshot, through the audit's scan.
            let (mut outstanding, mut receivable) = (0i128, 0i128);
            tx.scan_accounts(&mut |_, balance, _| match balance {
                b if b > 0 => outstanding += i128::from(b),
                b => receivable -= i128::from(b),
            })?;
            // Grants past their expiry are gone from balances already.
            let now = tx.now()?;
            outstanding -= i128::from(tx.due_grants_total(now)?.micros());
            let flows = Flows::of(&tx.daily_totals(i64::MIN, i64::MAX)?)?;
            let holds = tx.outstanding_holds(now)?;
            Ok((tx.figures()?, flows, (outstanding, holds), receivable, tx.allowance_figures()?))
        });
        let schema_version = self.inner.store.applied_versions().map(|v| v.last().copied().unwrap_or(0));
        self.track(figures.and_then(|(f, flows, (outstanding, holds), receivable, (expired, live))| {
            let credits = Credits::from_total;
            let mut by_currency = BTreeMap::new();
            for (currency, minor) in flows.revenue_minor {
                let minor = i64::try_from(minor)
                    .map_err(|_| Error::Internal(format!("{currency} revenue exceeds the 64-bit range")))?;
                by_currency.insert(currency, minor);
            }
            let issued = credits(flows.allowance_issued, "allowance_issued")?;
            let revenue = by_currency.get("USD").copied().unwrap_or(0);
            Ok(Report {
                users: f.users,
                paying_users: f.paying_users,
                users_attempted_key: f.users_attempted_key,
                key_generation_attempts: f.key_generation_attempts,
                key_generation_successes: f.key_generation_successes,
                purchase_conversion: (f.paying_users_attempted_key, f.users_attempted_key),
                credits_purchased: credits(flows.purchased, "credits_purchased")?,
                revenue_usd_minor: revenue,
                revenue_per_paying_user_usd_minor: if f.paying_users == 0 {
                    0
                } else {
                    revenue / f.paying_users as i64
                },
                revenue_minor_by_currency: by_currency,
                credits_used: credits(flows.used, "credits_used")?,
                outstanding_balance: credits(outstanding, "outstanding_balance")?,
                outstanding_holds: holds,
                overdraft_receivable: credits(receivable, "overdraft_receivable")?,
                allowance_issued: issued,
                allowance_used: credits(
                    i128::from(issued.micros()) - i128::from(expired.micros()) - i128::from(live.micros()),
                    "allowance_used",
                )?,
                schema_version: schema_version?,
                library_schema_version: self.inner.store.latest_version(),
            })
        }))
    }
}

fn mismatch(user: &str, problem: &str, detail: String) -> AuditMismatch {
    AuditMismatch { user_id: user.to_string(), problem: problem.to_string(), detail }
}

/// The whole-ledger audit on one snapshot (see `CreditManager::audit`).
fn audit_all(tx: &mut dyn Tx) -> Result<AuditReport> {
    let mut accounts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    tx.scan_accounts(&mut |u, balance, last_seq| {
        accounts.insert(u.to_string(), (balance, last_seq));
    })?;
    let mut mismatches = Vec::new();
    let mut entries_checked = 0u64;
    let mut walked: BTreeMap<String, Chain> = BTreeMap::new();
    tx.scan_entries(&mut |u, seq, amount, balance_after| {
        entries_checked += 1;
        if !walked.contains_key(u) {
            walked.insert(u.to_string(), Chain::default());
        }
        if let Some(chain) = walked.get_mut(u) {
            chain.step(u, seq, amount, balance_after, &mut mismatches);
        }
    })?;
    for (u, (balance, last_seq)) in &accounts {
        walked.remove(u).unwrap_or_default().against_account(u, *balance, *last_seq, &mut mismatches);
    }
    for u in walked.keys() {
        mismatches.push(mismatch(u, "missing_account", "entries without an account row".into()));
    }
    let mut lots: BTreeMap<String, (i128, i64)> = BTreeMap::new();
    tx.scan_grants(&mut |u, sum, bad| {
        lots.insert(u.to_string(), (sum, bad));
    })?;
    for (u, (balance, _)) in &accounts {
        grant_mismatches(u, *balance, lots.remove(u).unwrap_or((0, 0)), &mut mismatches);
    }
    for u in lots.keys() {
        mismatches.push(mismatch(u, "grant_mismatch", "grants without an account row".into()));
    }
    // Payments: reversals net of reinstatements within 0..=paid; each
    // reinstatement restores exactly its reversal.
    for (u, problem, detail) in tx.payment_problems()? {
        mismatches.push(AuditMismatch { user_id: u, problem, detail });
    }
    usage_mismatches(tx, None, &mut mismatches)?;
    rollup_mismatches(tx, &mut mismatches)?;
    let accounts_checked = accounts.len() as u64;
    Ok(AuditReport { ok: mismatches.is_empty(), accounts_checked, entries_checked, mismatches })
}

/// Usage: each charge (of `only`, else every account) is its tokens at the
/// rates its entry recorded.
fn usage_mismatches(tx: &mut dyn Tx, only: Option<&str>, out: &mut Vec<AuditMismatch>) -> Result<()> {
    tx.scan_priced_usage(only, &mut |u, seq, amount, tokens, price| match price.charge(tokens) {
        Ok(c) if c.micros() == -amount.micros() => {}
        found => {
            let expected = found.map_or_else(|e| e.to_string(), |c| format!("{} micros", c.micros()));
            let charged = -amount.micros();
            let detail =
                format!("usage entry seq {seq} charged {charged} micros, its tokens and rates make {expected}");
            out.push(mismatch(u, "usage_charge", detail));
        }
    })
}

/// The daily rollup: each rolled day's groups as stored against a fresh
/// count of its entries (by `created_at`, so an entry the rollup missed or
/// lost is found too). A finding is the ledger's, not an account's: its
/// `user_id` is empty.
fn rollup_mismatches(tx: &mut dyn Tx, out: &mut Vec<AuditMismatch>) -> Result<()> {
    let through = tx.rollup_through()?;
    let mut stored = tx.rolled_totals(i64::MIN, through, through)?;
    for (key, fresh) in tx.day_sums(i64::MIN, through, false)? {
        let held = stored.remove(&key).unwrap_or_default();
        if held != fresh {
            out.push(rollup_mismatch(&key, &held, &fresh));
        }
    }
    for (key, held) in stored {
        out.push(rollup_mismatch(&key, &held, &DaySums::default()));
    }
    Ok(())
}

fn rollup_mismatch(key: &DayKey, held: &DaySums, fresh: &DaySums) -> AuditMismatch {
    let (day, kind, model, currency) = key;
    let detail = format!(
        "daily totals of {} kind {kind} model {model:?} currency {currency:?}: the rollup holds {}, the entries make {}",
        Timestamp(*day).to_rfc3339(),
        held.describe(),
        fresh.describe()
    );
    mismatch("", "rollup", detail)
}

/// One account's entries walked in seq order: their running sum and the last seq.
#[derive(Clone, Copy, Default)]
struct Chain {
    sum: i128,
    seq: i64,
}

impl Chain {
    /// The next entry: its seq follows the last, its `balance_after` is the running sum.
    fn step(&mut self, u: &str, seq: i64, amount: i64, balance_after: i64, out: &mut Vec<AuditMismatch>) {
        if seq != self.seq + 1 {
            out.push(mismatch(u, "seq_gap", format!("seq {seq} follows {}", self.seq)));
        }
        self.sum += i128::from(amount);
        self.seq = seq;
        if self.sum != i128::from(balance_after) {
            let detail =
                format!("entry seq {seq} has balance_after {balance_after} micros, running sum is {}", self.sum);
            out.push(mismatch(u, "balance_after_chain", detail));
        }
    }

    /// The account row against its walked entries: balance == sum, last_seq == last entry's seq.
    fn against_account(self, u: &str, balance: i64, last_seq: i64, out: &mut Vec<AuditMismatch>) {
        if i128::from(balance) != self.sum {
            out.push(mismatch(u, "balance_mismatch", format!("balance {balance} micros, sum of entries {}", self.sum)));
        }
        if last_seq != self.seq {
            out.push(mismatch(u, "seq_gap", format!("account last_seq {last_seq}, last entry seq {}", self.seq)));
        }
    }
}

/// Grants: sum(remaining) == max(balance, 0), each 0 <= remaining <= amount.
fn grant_mismatches(u: &str, balance: i64, (sum, bad): (i128, i64), out: &mut Vec<AuditMismatch>) {
    if sum != i128::from(balance.max(0)) {
        out.push(mismatch(u, "grant_mismatch", format!("grants hold {sum} micros, the balance is {balance}")));
    }
    if bad > 0 {
        out.push(mismatch(u, "grant_out_of_range", format!("{bad} grants have remaining outside 0..=amount")));
    }
}

/// `user`'s entries as (seq, amount, balance_after), oldest first.
fn entries_oldest_first(tx: &mut dyn Tx, user: &str) -> Result<Vec<(i64, i64, i64)>> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = tx.entries(user, before, MAX_PAGE_LIMIT)?;
        let last_page = page.len() < MAX_PAGE_LIMIT as usize;
        before = page.last().map(|e| e.seq);
        all.extend(page.iter().map(|e| (e.seq, e.amount.micros(), e.balance_after.micros())));
        if last_page || before.is_none() {
            all.reverse();
            return Ok(all);
        }
    }
}
