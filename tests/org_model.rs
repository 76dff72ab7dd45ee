//! Property test of organisations and allowances, with the injected clock:
//! random sequences of payments, joins and leaves, budgets, projects,
//! allowances (with and without rollover), charges, holds, clock moves and
//! sweeps. After every step: the audit passes (and the invariant checks run
//! inside every write), membership is what the model says, every charge
//! went to the paying account the model names, each member budget's spent
//! is the member's usage in the window, verify's budget figures are the
//! listings', and no allowance refilled twice in a period.

mod common;

use creditgate::{
    AllowanceSpec, BudgetLimit, BudgetScope, CreditManager, Credits, EntryKind, EntryOptions, HoldAmount, HoldId,
    KeyRef, Settlement, SpendWindow, TestClock, Timestamp, Usage,
};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const ORG: &str = "org";
const MEMBERS: [&str; 2] = ["ann", "ben"];
const HOUR: i64 = 3_600_000_000;
const WINDOWS: [SpendWindow; 4] =
    [SpendWindow::Daily, SpendWindow::Weekly, SpendWindow::Monthly, SpendWindow::Lifetime];
const PERIODS: [SpendWindow; 3] = [SpendWindow::Daily, SpendWindow::Weekly, SpendWindow::Monthly];

#[derive(Clone, Debug)]
enum Op {
    Pay { credits: i64 },
    Join { m: usize },
    Leave { m: usize },
    Budget { m: Option<usize>, limit: Option<i64>, window: usize, low: bool },
    Project { m: usize, inside: bool },
    Allowance { m: Option<usize>, credits: i64, period: usize, cap: Option<i64> },
    Use { m: usize, tokens: i64 },
    Reserve { m: usize, credits: i64 },
    Settle { hold: usize, credits: i64 },
    Advance { hours: i64 },
    Sweep,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let m = 0..MEMBERS.len();
    prop_oneof![
        2 => (1i64..=50).prop_map(|credits| Op::Pay { credits }),
        2 => m.clone().prop_map(|m| Op::Join { m }),
        1 => m.clone().prop_map(|m| Op::Leave { m }),
        2 => (proptest::option::of(m.clone()), proptest::option::of(0i64..=30), 0..WINDOWS.len(), any::<bool>())
            .prop_map(|(m, limit, window, low)| Op::Budget { m, limit, window, low }),
        1 => (m.clone(), any::<bool>()).prop_map(|(m, inside)| Op::Project { m, inside }),
        1 => (proptest::option::of(m.clone()), 1i64..=10, 0..PERIODS.len(), proptest::option::of(10i64..=25))
            .prop_map(|(m, credits, period, cap)| Op::Allowance { m, credits, period, cap }),
        5 => (m.clone(), 0i64..=8_000).prop_map(|(m, tokens)| Op::Use { m, tokens }),
        2 => (m.clone(), 1i64..=12).prop_map(|(m, credits)| Op::Reserve { m, credits }),
        2 => (0usize..4, 0i64..=12).prop_map(|(hold, credits)| Op::Settle { hold, credits }),
        3 => prop_oneof![1i64..=30, Just(24 * 7), Just(24 * 31)].prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Sweep),
    ]
}

fn c(n: i64) -> Credits {
    Credits::from_micros(n * 1_000_000)
}

struct Harness {
    m: CreditManager,
    clock: TestClock,
    keys: Vec<(String, creditgate::KeyId)>,
    /// The model: who is a member now.
    members: BTreeSet<usize>,
    holds: Vec<HoldId>,
    allowances: usize,
    entries: usize,
    _guard: common::Guard,
}

impl Harness {
    fn new() -> Harness {
        let (m, clock, guard) = common::clocked_manager();
        let keys = MEMBERS
            .iter()
            .map(|u| {
                let k = m.create_api_key(u, None).unwrap();
                (k.secret.expose().to_string(), k.key_id)
            })
            .collect();
        m.create_project(ORG, "p").unwrap();
        Harness {
            m,
            clock,
            keys,
            members: BTreeSet::new(),
            holds: Vec::new(),
            allowances: 0,
            entries: 0,
            _guard: guard,
        }
    }

    fn paying(&self, m: usize) -> &'static str {
        if self.members.contains(&m) { ORG } else { MEMBERS[m] }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let none = EntryOptions::default();
        match *op {
            Op::Pay { credits } => {
                self.m.add_credits(ORG, c(credits), EntryKind::Purchase, &none).unwrap();
            }
            Op::Join { m } => {
                let r = self.m.add_member(ORG, MEMBERS[m]);
                prop_assert!(r.is_ok(), "join {:?}", r);
                self.members.insert(m);
            }
            Op::Leave { m } => {
                let r = self.m.remove_member(ORG, MEMBERS[m]);
                prop_assert_eq!(r.is_ok(), self.members.remove(&m), "leave {:?}", r);
            }
            Op::Budget { m, limit, window, low } => {
                let scope = m.map_or(BudgetScope::Project("p"), |m| BudgetScope::Member(MEMBERS[m]));
                let limit = limit.map(|l| BudgetLimit {
                    limit: c(l),
                    window: WINDOWS[window],
                    low_threshold: low.then(|| c(l / 2)),
                });
                let r = self.m.set_budget(ORG, scope, limit);
                let known = m.is_none_or(|m| self.members.contains(&m));
                prop_assert_eq!(r.is_ok(), known, "budget {:?}", r);
            }
            Op::Project { m, inside } => {
                let r = self.m.set_key_project(self.keys[m].1, inside.then_some("p"));
                // Only the organisation's keys can be in its project.
                prop_assert_eq!(r.is_ok(), !inside || self.members.contains(&m), "project {:?}", r);
            }
            Op::Allowance { .. } if self.allowances >= 3 => {}
            Op::Allowance { m, credits, period, cap } => {
                let member = m.map(|m| MEMBERS[m]);
                let spec = AllowanceSpec {
                    user: ORG,
                    member,
                    key: None,
                    amount: c(credits),
                    period: PERIODS[period],
                    rollover_cap: cap.map(c),
                };
                let r = self.m.set_allowance(&spec);
                let ok = m.is_none_or(|m| self.members.contains(&m));
                prop_assert_eq!(r.is_ok(), ok, "allowance {:?}", r);
                self.allowances += usize::from(ok);
            }
            Op::Use { m, tokens } => {
                let usage = Usage::new(tokens, 0, None);
                let charge = self.m.record_usage(KeyRef::Secret(&self.keys[m].0), usage, None).unwrap();
                prop_assert_eq!(charge.user_id.as_str(), self.paying(m), "paying account");
                let e = &self.m.transactions(self.paying(m), 1, None).unwrap()[0];
                let member = self.members.contains(&m).then(|| MEMBERS[m].to_string());
                prop_assert_eq!(&e.member_id, &member, "the entry records the member");
            }
            Op::Reserve { m, credits } => {
                if let Ok(h) = self.m.reserve(&self.keys[m].0, HoldAmount::Credits(c(credits)), 3_600, None) {
                    self.holds.push(h.hold_id);
                }
            }
            Op::Settle { hold, credits } => {
                if hold < self.holds.len() {
                    // Settled once: another amount would be an idempotency conflict.
                    let id = self.holds.remove(hold);
                    self.m.settle(id, Settlement::Credits(c(credits))).unwrap();
                }
            }
            Op::Advance { hours } => self.clock.advance(hours * HOUR),
            Op::Sweep => {
                self.m.expire_grants(100).unwrap();
                for a in self.m.allowances(ORG).unwrap() {
                    prop_assert!(a.next_refill_at > self.now(), "a swept allowance is refilled: {:?}", a);
                }
            }
        }
        self.check(op)
    }

    /// The ledger's clock (the test clock over the wall clock).
    fn now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.clock.offset_micros())
    }

    fn check(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let audit = self.m.audit().unwrap();
        prop_assert!(audit.ok, "audit after {:?}: {:?}", op, audit.mismatches);
        prop_assert!(audit.entries_checked as usize >= self.entries, "entries only grow");
        self.entries = audit.entries_checked as usize;
        let listed = self.m.members(ORG).unwrap();
        let names: BTreeSet<usize> =
            listed.iter().map(|x| MEMBERS.iter().position(|u| *u == x.user_id).unwrap()).collect();
        prop_assert_eq!(&names, &self.members, "members after {:?}", op);
        let org_entries = self.m.transactions(ORG, 1000, None).unwrap();
        for member in &listed {
            let (Some(b), key) = (&member.budget, MEMBERS.iter().position(|u| *u == member.user_id).unwrap()) else {
                continue;
            };
            let start = b.window.bounds(self.now()).0;
            let used: i64 = org_entries
                .iter()
                .filter(|e| e.kind == EntryKind::Usage && e.member_id.as_deref() == Some(&member.user_id))
                .filter(|e| e.created_at >= start)
                .map(|e| -e.amount.micros())
                .sum();
            prop_assert_eq!(b.spent.micros(), used, "{}'s budget after {:?}", member.user_id, op);
            let v = self.m.authenticate_api_key(&self.keys[key].0).unwrap();
            prop_assert_eq!(v.member_remaining, Some(b.remaining), "verify and members() agree after {:?}", op);
        }
        let project = self.m.projects(ORG).unwrap().remove(0);
        for (k, (secret, id)) in self.keys.iter().enumerate() {
            let info = self.m.list_api_keys(MEMBERS[k]).unwrap().into_iter().find(|i| i.key_id == *id).unwrap();
            if info.project.is_some() && self.members.contains(&k) {
                let v = self.m.authenticate_api_key(secret).unwrap();
                prop_assert_eq!(v.project_remaining, project.budget.as_ref().map(|b| b.remaining), "project figures");
            }
        }
        let mut periods = HashMap::new();
        for e in org_entries.iter().filter(|e| e.kind == EntryKind::Allowance) {
            let key = e.idempotency_key.clone().unwrap_or_default();
            prop_assert!(periods.insert(key.clone(), e.seq).is_none(), "refilled twice: {}", key);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(common::proptest_config(32))]

    #[test]
    fn organisations_and_allowances_keep_the_ledger_consistent(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let mut h = Harness::new();
        for op in &ops {
            h.step(op)?;
        }
    }
}
