//! Writes whose fate the ledger shows, for the fault tests
//! (`tests/disk_full.rs`, `tests/pg_terminate.rs`): every op has its own
//! request id or idempotency key, so after a fault the ledger tells whether
//! it was applied, and `check_and_retry` holds the ledger to what the callers
//! were told.

use creditgate::{CreditManager, Credits, EntryKind, EntryOptions, ErrorCode, KeyRef, Usage};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `record_usage` through the user's API key with a request id; n: input tokens.
    Usage,
    /// `add_credits(grant)` with an idempotency key; n: micro-credits.
    Grant,
    /// Strict `deduct_credits` with an idempotency key; n: micro-credits.
    Deduct,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub id: String,
    pub user: String,
    pub kind: Kind,
    pub n: i64,
}

impl Op {
    /// The `i`-th op of caller `t`: the three kinds in turn, varied sizes.
    pub fn nth(prefix: &str, user: &str, t: usize, i: u64) -> Op {
        let kind = [Kind::Usage, Kind::Grant, Kind::Deduct][((i + t as u64) % 3) as usize];
        let n = 1 + ((i * 37 + t as u64 * 11) % 900) as i64;
        let n = if kind == Kind::Usage { n } else { n * 1_000 };
        Op { id: format!("{prefix}-t{t}-{i}"), user: user.to_string(), kind, n }
    }

    /// The idempotency key its ledger entry carries.
    pub fn ledger_key(&self) -> String {
        match self.kind {
            Kind::Usage => format!("usage:{}", self.id),
            Kind::Grant | Kind::Deduct => self.id.clone(),
        }
    }

    /// The signed amount of its entry, in micro-credits (usage at the
    /// default price: 1 credit per 1,000 tokens).
    pub fn amount(&self) -> i64 {
        match self.kind {
            Kind::Usage => -self.n * 1_000,
            Kind::Grant => self.n,
            Kind::Deduct => -self.n,
        }
    }

    fn entry_kind(&self) -> EntryKind {
        match self.kind {
            Kind::Usage => EntryKind::Usage,
            Kind::Grant => EntryKind::Grant,
            Kind::Deduct => EntryKind::Deduct,
        }
    }

    /// Runs the op; Ok: its entry id and whether it was a replay.
    pub fn run(&self, m: &CreditManager, secret: &str) -> creditgate::Result<(String, bool)> {
        let key = self.ledger_key();
        let opts = EntryOptions { idempotency_key: Some(&key), reference: None, metadata: None };
        match self.kind {
            Kind::Usage => {
                let usage = Usage::new(self.n, 0, None);
                m.record_usage(KeyRef::Secret(secret), usage, Some(&self.id))
                    .map(|c| (c.entry_id.to_string(), c.replayed))
            }
            Kind::Grant => m
                .add_credits(&self.user, Credits::from_micros(self.n), EntryKind::Grant, &opts)
                .map(|e| (e.id.to_string(), e.replayed)),
            Kind::Deduct => m
                .deduct_credits(&self.user, Credits::from_micros(self.n), &opts)
                .map(|e| (e.id.to_string(), e.replayed)),
        }
    }
}

/// One call and what its caller was told.
#[derive(Debug)]
pub struct Outcome {
    pub op: Op,
    /// The entry id, or the error's code and message.
    pub result: Result<String, (ErrorCode, String)>,
}

impl Outcome {
    pub fn of(op: Op, r: creditgate::Result<(String, bool)>) -> Outcome {
        let result = match r {
            Ok((id, replayed)) => {
                assert!(!replayed, "{} replayed on its first call", op.id);
                Ok(id)
            }
            Err(e) => Err((e.code(), e.to_string())),
        };
        Outcome { op, result }
    }
}

/// A user's balance and entry count before the ops.
#[derive(Clone, Copy, Debug)]
pub struct Before {
    pub balance: i64,
    pub entries: usize,
}

pub fn before(m: &CreditManager, user: &str) -> Before {
    Before { balance: m.get_balance(user).expect("balance").micros(), entries: super::all_entries(m, user).len() }
}

/// What `check_and_retry` found.
#[derive(Debug, Default)]
pub struct Checked {
    pub acknowledged: usize,
    pub failed: usize,
    /// Failed calls whose write was applied all the same (outcome unknown).
    pub failed_applied: usize,
}

/// Entries by idempotency key, for every user in `users`.
fn ledger(m: &CreditManager, users: &[&str]) -> HashMap<String, Vec<creditgate::Entry>> {
    let mut map: HashMap<String, Vec<creditgate::Entry>> = HashMap::new();
    for u in users {
        for e in super::all_entries(m, u) {
            if let Some(k) = e.idempotency_key.clone() {
                map.entry(format!("{u}/{k}")).or_default().push(e);
            }
        }
    }
    map
}

/// Holds the ledger to the outcomes: every acknowledged op is there exactly
/// once (its entry id, kind and amount); every failed one at most once and
/// whole (kind and amount). Then retries each failed op with its key (a
/// replay exactly when it was applied) and checks that every op is there
/// exactly once, nothing else was added, each balance moved by exactly the
/// ops' amounts, and the audit is clean.
#[track_caller]
pub fn check_and_retry(
    m: &CreditManager,
    secrets: &HashMap<String, String>,
    before: &HashMap<String, Before>,
    outcomes: &[Outcome],
) -> Checked {
    let users: Vec<&str> = before.keys().map(String::as_str).collect();
    let found = ledger(m, &users);
    let mut checked = Checked::default();
    for o in outcomes {
        let entries = found.get(&format!("{}/{}", o.op.user, o.op.ledger_key())).map_or(&[][..], Vec::as_slice);
        for e in entries {
            assert_eq!((e.kind, e.amount.micros()), (o.op.entry_kind(), o.op.amount()), "{} is not whole", o.op.id);
        }
        match &o.result {
            Ok(id) => {
                checked.acknowledged += 1;
                assert_eq!(entries.len(), 1, "acknowledged {} is in the ledger {} times", o.op.id, entries.len());
                assert_eq!(entries[0].id.to_string(), *id, "{}: another entry id than acknowledged", o.op.id);
            }
            Err(_) => {
                checked.failed += 1;
                assert!(entries.len() <= 1, "failed {} is in the ledger {} times", o.op.id, entries.len());
                checked.failed_applied += entries.len();
            }
        }
    }
    // A failed write's outcome is unknown: retried with its key it applies
    // once or replays, never twice.
    for o in outcomes.iter().filter(|o| o.result.is_err()) {
        let k = format!("{}/{}", o.op.user, o.op.ledger_key());
        let was = found.get(&k);
        let (id, replayed) = o.op.run(m, &secrets[&o.op.user]).unwrap_or_else(|e| panic!("retry of {}: {e}", o.op.id));
        assert_eq!(replayed, was.is_some(), "retry of {}: replayed exactly when it had been applied", o.op.id);
        if let Some(was) = was {
            assert_eq!(id, was[0].id.to_string(), "retry of {}", o.op.id);
        }
    }
    let found = ledger(m, &users);
    for o in outcomes {
        let n = found.get(&format!("{}/{}", o.op.user, o.op.ledger_key())).map_or(0, Vec::len);
        assert_eq!(n, 1, "{} is in the ledger {n} times after the retries", o.op.id);
    }
    for (user, b) in before {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.op.user == *user).collect();
        let entries = super::all_entries(m, user).len();
        assert_eq!(entries, b.entries + mine.len(), "{user}: no entry beyond the ops");
        let moved: i64 = mine.iter().map(|o| o.op.amount()).sum();
        assert_eq!(m.get_balance(user).unwrap().micros(), b.balance + moved, "{user}: balance is the sum of the ops");
    }
    super::assert_audit_ok(m);
    checked
}
