//! Model-based property test: random sequences of operations run against the
//! ledger and against a small in-memory model of docs/reference.md. After every step
//! the result (ok, or which error code), the returned figures, every
//! account's balance, held and available credits, key state, the number of
//! ledger entries and the audit must agree with the model.

mod common;

use common::credits;
use creditgate::{
    AutoTopup, Config, CreditManager, Credits, EntryKind, EntryOptions, ErrorCode, HoldAmount, HoldId, KeyRef,
    ModelPrice, Settlement, Synchronous, TopupAmount, Usage,
};
use proptest::prelude::*;
use std::collections::HashMap;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const MIN_FIRST_KEY_CREDITS: i64 = 50;
const MAX_KEYS: usize = 3;
const MAX_HOLDS: usize = 4;
const MICROS: i64 = 1_000_000;
/// Models with a price: (name, micro-credits per 1k of input, output, cache
/// reads, cache writes; the request fee), cache prices None: the input's.
type Priced = (&'static str, i64, i64, Option<i64>, Option<i64>, i64);
const PRICED: [Priced; 3] = [
    ("m1", 1_234_567, 7, None, None, 0),
    ("m2", 0, 0, None, None, 0),
    ("m3", 1_000_000, 3_000_000, Some(100_000), Some(1_250_000), 7),
];
const MODEL_NAMES: [&str; 4] = ["m1", "m2", "m3", "unpriced"];
const ADD_KINDS: [EntryKind; 4] = [EntryKind::Grant, EntryKind::Purchase, EntryKind::Refund, EntryKind::Adjustment];
/// Alice's auto top-up threshold: every step that takes her available
/// balance from at or above it to below it requests one top-up.
const TOPUP_THRESHOLD: i64 = 10 * MICROS;

#[derive(Clone, Debug)]
enum Op {
    Add {
        user: usize,
        kind: usize,
        micros: i64,
        key: Option<u8>,
    },
    Deduct {
        user: usize,
        micros: i64,
        key: Option<u8>,
    },
    Pay {
        user: usize,
        payment: u8,
        minor: i64,
    },
    Reverse {
        payment: u8,
        minor: Option<i64>,
        reversal: Option<u8>,
    },
    Use {
        user: usize,
        key: usize,
        input: i64,
        output: i64,
        model: Option<usize>,
        request: Option<u8>,
    },
    Reserve {
        user: usize,
        key: usize,
        hold: HoldSpec,
        request: Option<u8>,
    },
    Settle {
        hold: usize,
        how: SettleSpec,
    },
    Release {
        hold: usize,
    },
    CreateKey {
        user: usize,
    },
    Revoke {
        user: usize,
        key: usize,
    },
    /// Runs an earlier step again: webhook retries, client retries, double settles.
    Repeat {
        back: usize,
    },
}

#[derive(Clone, Copy, Debug)]
enum HoldSpec {
    Micros(i64),
    Tokens(i64, Option<usize>),
}

#[derive(Clone, Copy, Debug)]
enum SettleSpec {
    Micros(i64),
    Tokens(i64, i64, Option<usize>),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let user = 0..USERS.len();
    // Amounts in quarter credits from −1 to 40 credits, plus odd micro-credits.
    let amount = prop_oneof![4 => (-4i64..=160).prop_map(|q| q * MICROS / 4), 1 => -3i64..=3_000_000];
    let small_key = proptest::option::of(0u8..4);
    let tokens = prop_oneof![8 => 0i64..=6_000, 1 => Just(-1i64)];
    let model = proptest::option::of(0..MODEL_NAMES.len());
    prop_oneof![
        3 => (user.clone(), 0..ADD_KINDS.len(), amount.clone(), small_key.clone())
            .prop_map(|(user, kind, micros, key)| Op::Add { user, kind, micros, key }),
        3 => (user.clone(), amount.clone(), small_key.clone())
            .prop_map(|(user, micros, key)| Op::Deduct { user, micros, key }),
        3 => (user.clone(), 0u8..4, prop_oneof![1 => Just(0i64), 9 => 1i64..=800])
            .prop_map(|(user, payment, minor)| Op::Pay { user, payment, minor }),
        2 => (0u8..4, proptest::option::of(prop_oneof![1 => Just(0i64), 9 => 1i64..=400]), proptest::option::of(0u8..4))
            .prop_map(|(payment, minor, reversal)| Op::Reverse { payment, minor, reversal }),
        4 => (user.clone(), 0usize..4, tokens.clone(), 0i64..=3_000, model.clone(), proptest::option::of(0u8..6))
            .prop_map(|(user, key, input, output, model, request)| Op::Use { user, key, input, output, model, request }),
        3 => (
                user.clone(),
                0usize..4,
                prop_oneof![
                    (-1i64..=20_000_000).prop_map(HoldSpec::Micros),
                    (0i64..=20_000, model.clone()).prop_map(|(t, m)| HoldSpec::Tokens(t, m)),
                ],
                proptest::option::of(0u8..6),
            )
            .prop_map(|(user, key, hold, request)| Op::Reserve { user, key, hold, request }),
        3 => (
                0usize..16,
                prop_oneof![
                    (0i64..=30_000_000).prop_map(SettleSpec::Micros),
                    (0i64..=8_000, 0i64..=2_000, model).prop_map(|(i, o, m)| SettleSpec::Tokens(i, o, m)),
                ],
            )
            .prop_map(|(hold, how)| Op::Settle { hold, how }),
        1 => (0usize..16).prop_map(|hold| Op::Release { hold }),
        2 => user.clone().prop_map(|user| Op::CreateKey { user }),
        1 => (user, 1usize..4).prop_map(|(user, key)| Op::Revoke { user, key }),
        4 => (0usize..8).prop_map(|back| Op::Repeat { back }),
    ]
}

/// What an idempotency key (per user) stands for.
#[derive(Clone, Debug)]
enum Stored {
    Plain { kind: EntryKind, micros: i64, balance_after: i64 },
    Usage { input: Option<i64>, output: Option<i64>, model: Option<String>, micros: i64, balance_after: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HoldStatus {
    Active,
    Settled,
    Released,
}

#[derive(Clone, Debug)]
struct ModelHold {
    id: HoldId,
    user: usize,
    micros: i64,
    model: Option<String>,
    request: Option<String>,
    status: HoldStatus,
}

#[derive(Clone, Debug)]
struct ModelKey {
    secret: String,
    id: creditgate::KeyId,
    revoked: bool,
}

struct Payment {
    user: usize,
    minor: i64,
    micros: i64,
    reversed_minor: i64,
    reversed_micros: i64,
}

#[derive(Default)]
struct Model {
    balance: [i64; 3],
    first_key_issued: [bool; 3],
    keys: [Vec<ModelKey>; 3],
    entry_keys: [HashMap<String, Stored>; 3],
    payments: HashMap<String, Payment>,
    /// reversal key → (payment id, minor units, balance_after)
    reversals: HashMap<String, (String, i64, i64, i64)>,
    holds: Vec<ModelHold>,
    entries: u64,
}

impl Model {
    fn held(&self, user: usize) -> i64 {
        self.holds.iter().filter(|h| h.user == user && h.status == HoldStatus::Active).map(|h| h.micros).sum()
    }

    fn available(&self, user: usize) -> i64 {
        self.balance[user] - self.held(user)
    }

    fn active_keys(&self, user: usize) -> usize {
        self.keys[user].iter().filter(|k| !k.revoked).count()
    }

    /// Appends an entry; returns balance_after.
    fn append(&mut self, user: usize, micros: i64) -> i64 {
        self.balance[user] += micros;
        self.entries += 1;
        self.balance[user]
    }
}

/// (input, output, cache read, cache write, fee) of a model.
fn price(model: Option<&str>) -> (i64, i64, i64, i64, i64) {
    model
        .and_then(|m| PRICED.iter().find(|p| p.0 == m))
        .map_or((MICROS, MICROS, MICROS, MICROS, 0), |p| (p.1, p.2, p.3.unwrap_or(p.1), p.4.unwrap_or(p.1), p.5))
}

/// The part of a prompt of `input` tokens the cache served (read, written):
/// a function of the prompt, so a replay reports the same counts.
fn cache_split(input: i64) -> (i64, i64) {
    (input.max(0) / 3, input.max(0) / 7)
}

/// ceil((uncached × in + read × cached + written × write + out × out) /
/// 1000), one ceil at the end, plus the fee.
fn charge(input: i64, output: i64, model: Option<&str>) -> i64 {
    let (pi, po, pc, pw, fee) = price(model);
    let (c, w) = cache_split(input);
    let total = i128::from(input - c - w) * i128::from(pi)
        + i128::from(c) * i128::from(pc)
        + i128::from(w) * i128::from(pw)
        + i128::from(output) * i128::from(po);
    ((total + 999) / 1000) as i64 + fee
}

/// A hold's quote of a prompt of `input` tokens: at its dearest rate.
fn worst_case(input: i64, model: Option<&str>) -> i64 {
    let (pi, _, pc, pw, fee) = price(model);
    let total = i128::from(input) * i128::from(pi.max(pc).max(pw));
    ((total + 999) / 1000) as i64 + fee
}

/// A usage with the cache counts of [`cache_split`].
fn usage(input: i64, output: i64, model: Option<&str>) -> Usage<'_> {
    let (cached_input_tokens, cache_write_tokens) = cache_split(input);
    Usage { cached_input_tokens, cache_write_tokens, ..Usage::new(input, output, model) }
}

fn opts(key: &Option<String>) -> EntryOptions<'_> {
    EntryOptions { idempotency_key: key.as_deref(), reference: None, metadata: None }
}

/// Compares an outcome with the model's expectation: Ok(check) or Err(code).
macro_rules! expect {
    ($step:expr, $actual:expr, $expected:expr) => {{
        let actual = $actual;
        match (&actual, &$expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(code)) => prop_assert_eq!(e.code(), *code, "step {:?}: {}", $step, e),
            (a, b) => prop_assert!(false, "step {:?}: got {:?}, the model expected {:?}", $step, a, b),
        }
        actual.ok()
    }};
}

struct Harness {
    m: CreditManager,
    model: Model,
    /// Alice's crossings of `TOPUP_THRESHOLD` so far (the rule's top-ups).
    crossings: usize,
    _guard: common::Guard,
}

impl Harness {
    fn new() -> Harness {
        let config = Config::new()
            .min_credits_api_key(credits(MIN_FIRST_KEY_CREDITS))
            .unwrap()
            .max_active_keys_per_user(MAX_KEYS as u32)
            .unwrap()
            .max_active_holds_per_user(MAX_HOLDS as u32)
            .unwrap()
            // Durability is not under test here; speed is welcome.
            .synchronous(Synchronous::Normal)
            // Test mode: every write audits the account it moved, so a
            // broken invariant fails at the step that broke it.
            .check_invariants(true);
        let (m, guard) = common::manager_with(config);
        for (name, input, output, cached, write, fee) in PRICED {
            let price = ModelPrice {
                input_per_1k: Credits::from_micros(input),
                output_per_1k: Credits::from_micros(output),
                cached_input_per_1k: cached.map(Credits::from_micros),
                cache_write_per_1k: write.map(Credits::from_micros),
                request_fee: Credits::from_micros(fee),
            };
            m.set_model_pricing(name, price, None).unwrap();
        }
        let mut model = Model::default();
        for (u, user) in USERS.iter().enumerate() {
            // Every user starts with one legacy key, so usage never lacks a key.
            let secret = format!("legacy-key-of-{user}");
            let info = m.import_api_key(user, Some(&secret), None, None).unwrap();
            model.keys[u].push(ModelKey { secret, id: info.key_id, revoked: false });
        }
        // Caps far above a case's steps: every crossing requests.
        let rule = AutoTopup {
            threshold: Credits::from_micros(TOPUP_THRESHOLD),
            amount: TopupAmount::Fixed(credits(25)),
            max_per_month: 100,
            monthly_cap: credits(1_000_000),
        };
        // Alice starts at 0, below the threshold: one top-up at once.
        let at_once = m.set_auto_topup(USERS[0], &rule).unwrap();
        Harness { m, model, crossings: usize::from(at_once.is_some()), _guard: guard }
    }

    /// `step`, then the auto top-up invariant: alice's top-ups are her
    /// crossings, by the model's available balance before and after.
    fn step_and_cross(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.model.available(0);
        self.step(op)?;
        let after = self.model.available(0);
        if before >= TOPUP_THRESHOLD && TOPUP_THRESHOLD > after {
            self.crossings += 1;
        }
        let requested = self.m.topups(USERS[0], 1000).unwrap().len();
        prop_assert_eq!(requested, self.crossings, "alice's top-ups after {:?}", op);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let (m, model) = (&self.m, &mut self.model);
        match *op {
            Op::Add { user, kind, micros, key } => {
                let kind = ADD_KINDS[kind];
                let key = key.map(|k| format!("k{k}"));
                let valid = if kind == EntryKind::Adjustment { micros != 0 } else { micros > 0 };
                let expected: Result<(), ErrorCode> = if !valid {
                    Err(ErrorCode::InvalidArgument)
                } else {
                    match key.as_ref().and_then(|k| model.entry_keys[user].get(k)) {
                        Some(Stored::Plain { kind: k, micros: a, .. }) if *k == kind && *a == micros => Ok(()),
                        Some(_) => Err(ErrorCode::IdempotencyConflict),
                        None if micros < 0 && model.available(user) < -micros => Err(ErrorCode::InsufficientCredits),
                        None => Ok(()),
                    }
                };
                let r = m.add_credits(USERS[user], Credits::from_micros(micros), kind, &opts(&key));
                if let Some(e) = expect!(op, r, expected) {
                    self.check_plain_entry(op, user, kind, micros, key, e)?;
                }
            }
            Op::Deduct { user, micros, key } => {
                let key = key.map(|k| format!("k{k}"));
                let expected: Result<(), ErrorCode> = if micros <= 0 {
                    Err(ErrorCode::InvalidArgument)
                } else {
                    match key.as_ref().and_then(|k| model.entry_keys[user].get(k)) {
                        Some(Stored::Plain { kind: EntryKind::Deduct, micros: a, .. }) if *a == -micros => Ok(()),
                        Some(_) => Err(ErrorCode::IdempotencyConflict),
                        None if model.available(user) < micros => Err(ErrorCode::InsufficientCredits),
                        None => Ok(()),
                    }
                };
                let r = m.deduct_credits(USERS[user], Credits::from_micros(micros), &opts(&key));
                if let Some(e) = expect!(op, r, expected) {
                    self.check_plain_entry(op, user, EntryKind::Deduct, -micros, key, e)?;
                }
            }
            Op::Pay { user, payment, minor } => {
                let pid = format!("pi_{payment}");
                let expected = if minor <= 0 {
                    Err(ErrorCode::InvalidArgument)
                } else {
                    match model.payments.get(&pid) {
                        Some(p) if p.user == user && p.minor == minor => Ok(()),
                        Some(_) => Err(ErrorCode::IdempotencyConflict),
                        None => Ok(()),
                    }
                };
                let r = m.record_payment(USERS[user], &pid, minor, "usd");
                if let Some(e) = expect!(op, r, expected) {
                    prop_assert_eq!(e.amount.micros(), minor * 10 * MICROS, "$1 = 1,000 credits");
                    prop_assert_eq!(e.kind, EntryKind::Purchase);
                    let known = model.payments.contains_key(&pid);
                    prop_assert_eq!(e.replayed, known);
                    if !known {
                        let after = model.append(user, minor * 10 * MICROS);
                        prop_assert_eq!(e.balance_after.micros(), after);
                        let p =
                            Payment { user, minor, micros: minor * 10 * MICROS, reversed_minor: 0, reversed_micros: 0 };
                        model.payments.insert(pid, p);
                    }
                }
            }
            Op::Reverse { payment, minor, reversal } => self.reverse(op, payment, minor, reversal)?,
            Op::Use { user, key, input, output, model: mi, request } => {
                let k = model.keys[user][key % model.keys[user].len()].clone();
                let model_name = mi.map(|i| MODEL_NAMES[i].to_string());
                let request = request.map(|r| format!("r{r}"));
                let usage = usage(input, output, model_name.as_deref());
                let amount = charge(input.max(0), output, model_name.as_deref());
                let r = m.record_usage(KeyRef::Secret(&k.secret), usage, request.as_deref());
                let valid = input >= 0;
                self.check_charge(op, user, r, valid, request, Some(input), Some(output), model_name, amount, None)?;
            }
            Op::Reserve { user, key, hold, request } => self.reserve(op, user, key, hold, request)?,
            Op::Settle { hold, how } => {
                if model.holds.is_empty() {
                    return Ok(());
                }
                let h = model.holds[hold % model.holds.len()].clone();
                let (settlement, input, output, model_name, amount) = match how {
                    SettleSpec::Micros(c) => {
                        (Settlement::Credits(Credits::from_micros(c)), None, None, h.model.clone(), c)
                    }
                    SettleSpec::Tokens(i, o, mi) => {
                        let name = mi.map(|i| MODEL_NAMES[i].to_string()).or_else(|| h.model.clone());
                        let amount = charge(i, o, name.as_deref());
                        let u = usage(i, o, mi.map(|i| MODEL_NAMES[i]));
                        (Settlement::Tokens(u), Some(i), Some(o), name, amount)
                    }
                };
                let request = Some(h.request.clone().unwrap_or_else(|| h.id.to_string()));
                let r = m.settle(h.id, settlement);
                let idx = hold % model.holds.len();
                self.check_charge(op, h.user, r, true, request, input, output, model_name, amount, Some(idx))?;
            }
            Op::Release { hold } => {
                if model.holds.is_empty() {
                    return Ok(());
                }
                let idx = hold % model.holds.len();
                expect!(op, m.release(model.holds[idx].id), Ok::<(), ErrorCode>(()));
                if model.holds[idx].status == HoldStatus::Active {
                    model.holds[idx].status = HoldStatus::Released;
                }
            }
            Op::CreateKey { user } => {
                let expected = if model.active_keys(user) >= MAX_KEYS {
                    Err(ErrorCode::LimitReached)
                } else {
                    let required = if model.first_key_issued[user] { MICROS } else { MIN_FIRST_KEY_CREDITS * MICROS };
                    if model.available(user) >= required { Ok(()) } else { Err(ErrorCode::InsufficientCredits) }
                };
                if let Some(k) = expect!(op, m.create_api_key(USERS[user], None), expected) {
                    model.first_key_issued[user] = true;
                    model.keys[user].push(ModelKey {
                        secret: k.secret.expose().to_string(),
                        id: k.key_id,
                        revoked: false,
                    });
                }
            }
            Op::Repeat { .. } => unreachable!("resolved by the caller"),
            Op::Revoke { user, key } => {
                let idx = key % model.keys[user].len();
                expect!(op, m.revoke_api_key(model.keys[user][idx].id, Some(USERS[user])), Ok::<(), ErrorCode>(()));
                model.keys[user][idx].revoked = true;
            }
        }
        self.check_state(op)
    }

    fn check_plain_entry(
        &mut self,
        op: &Op,
        user: usize,
        kind: EntryKind,
        micros: i64,
        key: Option<String>,
        e: creditgate::Entry,
    ) -> Result<(), TestCaseError> {
        let model = &mut self.model;
        prop_assert_eq!(e.kind, kind, "{:?}", op);
        prop_assert_eq!(e.amount.micros(), micros, "{:?}", op);
        let stored = key.as_ref().and_then(|k| model.entry_keys[user].get(k)).cloned();
        match stored {
            Some(Stored::Plain { balance_after, .. }) => {
                prop_assert!(e.replayed, "{:?}: a used key must replay", op);
                prop_assert_eq!(e.balance_after.micros(), balance_after, "{:?}: the original entry", op);
            }
            Some(Stored::Usage { .. }) => prop_assert!(false, "{:?}: usage keys are not caller keys", op),
            None => {
                prop_assert!(!e.replayed, "{:?}", op);
                let after = model.append(user, micros);
                prop_assert_eq!(e.balance_after.micros(), after, "{:?}", op);
                if let Some(k) = key {
                    model.entry_keys[user].insert(k, Stored::Plain { kind, micros, balance_after: after });
                }
            }
        }
        Ok(())
    }

    fn reverse(&mut self, op: &Op, payment: u8, minor: Option<i64>, reversal: Option<u8>) -> Result<(), TestCaseError> {
        let (m, model) = (&self.m, &mut self.model);
        let pid = format!("pi_{payment}");
        let key = format!("reversal:{}", reversal.map_or(pid.clone(), |r| format!("re_{r}")));
        let expected = if minor.is_some_and(|a| a <= 0) {
            Err(ErrorCode::InvalidArgument)
        } else if let Some(p) = model.payments.get(&pid) {
            match model.reversals.get(&key) {
                Some((rp, rminor, _, _)) if *rp == pid && minor.is_none_or(|a| a == *rminor) => Ok(()),
                Some(_) => Err(ErrorCode::IdempotencyConflict),
                None => {
                    let remaining = p.minor - p.reversed_minor;
                    if remaining <= 0 || minor.unwrap_or(remaining) > remaining {
                        Err(ErrorCode::InvalidArgument)
                    } else {
                        Ok(())
                    }
                }
            }
        } else {
            Err(ErrorCode::NotFound)
        };
        let r = m.reverse_payment(&pid, minor, Some("model test"), reversal.map(|r| format!("re_{r}")).as_deref());
        if let Some(e) = expect!(op, r, expected) {
            prop_assert_eq!(e.kind, EntryKind::Reversal);
            if let Some((_, rminor, micros, balance_after)) = model.reversals.get(&key) {
                prop_assert!(e.replayed);
                prop_assert_eq!(e.amount_minor, Some(*rminor));
                prop_assert_eq!(e.amount.micros(), *micros);
                prop_assert_eq!(e.balance_after.micros(), *balance_after);
            } else {
                prop_assert!(!e.replayed);
                let p = model.payments.get_mut(&pid).unwrap();
                let remaining = p.minor - p.reversed_minor;
                let part = minor.unwrap_or(remaining);
                let micros = if part == remaining { p.micros - p.reversed_micros } else { p.micros * part / p.minor };
                p.reversed_minor += part;
                p.reversed_micros += micros;
                let user = p.user;
                prop_assert_eq!(e.amount.micros(), -micros);
                prop_assert_eq!(e.amount_minor, Some(part));
                let after = model.append(user, -micros);
                prop_assert_eq!(e.balance_after.micros(), after);
                model.reversals.insert(key, (pid, part, -micros, after));
            }
        }
        Ok(())
    }

    fn reserve(
        &mut self,
        op: &Op,
        user: usize,
        key: usize,
        hold: HoldSpec,
        request: Option<u8>,
    ) -> Result<(), TestCaseError> {
        let (m, model) = (&self.m, &mut self.model);
        let k = model.keys[user][key % model.keys[user].len()].clone();
        let request = request.map(|r| format!("r{r}"));
        let (amount, hold_model, valid) = match hold {
            HoldSpec::Micros(c) => (c, None, c > 0),
            HoldSpec::Tokens(t, mi) => {
                let name = mi.map(|i| MODEL_NAMES[i].to_string());
                (worst_case(t, name.as_deref()).max(1), name, true)
            }
        };
        let existing = request
            .as_ref()
            .and_then(|r| model.holds.iter().position(|h| h.user == user && h.request.as_ref() == Some(r)));
        let expected = if !valid {
            Err(ErrorCode::InvalidArgument)
        } else if k.revoked {
            Err(ErrorCode::InvalidApiKey)
        } else if let Some(i) = existing {
            if model.holds[i].micros == amount { Ok(()) } else { Err(ErrorCode::IdempotencyConflict) }
        } else if model.holds.iter().filter(|h| h.user == user && h.status == HoldStatus::Active).count() >= MAX_HOLDS {
            Err(ErrorCode::LimitReached)
        } else if model.available(user) < amount {
            Err(ErrorCode::InsufficientCredits)
        } else {
            Ok(())
        };
        let spec = match hold {
            HoldSpec::Micros(c) => HoldAmount::Credits(Credits::from_micros(c)),
            HoldSpec::Tokens(t, mi) => HoldAmount::Tokens { tokens: t, model: mi.map(|i| MODEL_NAMES[i]) },
        };
        let r = m.reserve(&k.secret, spec, 600, request.as_deref());
        if let Some(h) = expect!(op, r, expected) {
            prop_assert_eq!(h.amount.micros(), amount);
            prop_assert_eq!(h.user_id.as_str(), USERS[user]);
            match existing {
                Some(i) => {
                    prop_assert!(h.replayed);
                    prop_assert_eq!(h.hold_id, model.holds[i].id);
                }
                None => {
                    prop_assert!(!h.replayed);
                    model.holds.push(ModelHold {
                        id: h.hold_id,
                        user,
                        micros: amount,
                        model: hold_model,
                        request,
                        status: HoldStatus::Active,
                    });
                }
            }
        }
        Ok(())
    }

    /// A usage charge (record_usage, or settle of hold `hold`).
    #[allow(clippy::too_many_arguments)]
    fn check_charge(
        &mut self,
        op: &Op,
        user: usize,
        r: creditgate::Result<creditgate::UsageCharge>,
        valid: bool,
        request: Option<String>,
        input: Option<i64>,
        output: Option<i64>,
        model_name: Option<String>,
        amount: i64,
        hold: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let model = &mut self.model;
        let key = request.map(|r| format!("usage:{r}"));
        let stored = key.as_ref().and_then(|k| model.entry_keys[user].get(k)).cloned();
        let expected = if !valid {
            Err(ErrorCode::InvalidArgument)
        } else {
            match &stored {
                Some(Stored::Usage { input: si, output: so, model: sm, micros, .. })
                    if *si == input
                        && *so == output
                        && *sm == model_name
                        && (input.is_some() || *micros == -amount) =>
                {
                    Ok(())
                }
                Some(_) => Err(ErrorCode::IdempotencyConflict),
                None => Ok(()),
            }
        };
        if let Some(c) = expect!(op, r, expected) {
            prop_assert_eq!(c.user_id.as_str(), USERS[user]);
            prop_assert_eq!(c.tokens, input.unwrap_or(0) + output.unwrap_or(0));
            match stored {
                Some(Stored::Usage { micros, balance_after, .. }) => {
                    prop_assert!(c.replayed, "{:?}", op);
                    prop_assert_eq!(c.charged.micros(), -micros);
                    prop_assert_eq!(c.balance.micros(), balance_after);
                    prop_assert_eq!(c.overdraft, balance_after < 0);
                }
                Some(Stored::Plain { .. }) => prop_assert!(false, "usage key held a plain entry"),
                None => {
                    prop_assert!(!c.replayed, "{:?}", op);
                    prop_assert_eq!(c.charged.micros(), amount, "{:?}", op);
                    let after = model.append(user, -amount);
                    prop_assert_eq!(c.balance.micros(), after);
                    prop_assert_eq!(c.overdraft, after < 0, "overdraft exactly when below zero");
                    if let Some(k) = key {
                        let s =
                            Stored::Usage { input, output, model: model_name, micros: -amount, balance_after: after };
                        model.entry_keys[user].insert(k, s);
                    }
                }
            }
            if let Some(i) = hold {
                model.holds[i].status = HoldStatus::Settled;
            }
        }
        Ok(())
    }

    fn check_state(&self, op: &Op) -> Result<(), TestCaseError> {
        for (u, user) in USERS.iter().enumerate() {
            let a = self.m.account(user).unwrap();
            prop_assert_eq!(a.balance.micros(), self.model.balance[u], "balance of {} after {:?}", user, op);
            prop_assert_eq!(a.held.micros(), self.model.held(u), "held of {} after {:?}", user, op);
            prop_assert_eq!(a.available.micros(), self.model.available(u), "available of {} after {:?}", user, op);
            prop_assert_eq!(a.first_key_issued, self.model.first_key_issued[u]);
            prop_assert_eq!(a.active_keys as usize, self.model.active_keys(u));
        }
        let audit = self.m.audit().unwrap();
        prop_assert!(audit.ok, "audit after {:?}: {:?}", op, audit.mismatches);
        prop_assert_eq!(audit.entries_checked, self.model.entries, "entries after {:?}", op);
        Ok(())
    }
}

proptest! {
    // 64 cases in CI; PROPTEST_CASES=N for a deeper local run.
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn the_ledger_behaves_like_the_model(ops in proptest::collection::vec(op_strategy(), 1..48)) {
        let mut h = Harness::new();
        let mut done: Vec<Op> = Vec::new();
        for op in ops {
            let op = match op {
                Op::Repeat { back } if done.is_empty() => { let _ = back; continue; }
                Op::Repeat { back } => done[done.len() - 1 - back % done.len()].clone(),
                op => op,
            };
            h.step_and_cross(&op)?;
            done.push(op);
        }
    }
}

// ----- grants, draw-down order and expiry on an injected clock --------------

mod grants_model {
    //! A second model: every account's grants (lots) with their category,
    //! priority, expiry and remainder; credits, strict and non-strict debits,
    //! payments and their grant-aware reversals, the clock moving on in whole
    //! hours, and sweeps. After every step the balances, the live grants (in
    //! draw-down order), the entries and the audit must agree with the model.

    use super::common;
    use creditgate::{
        CreditManager, Credits, EntryKind, EntryOptions, ErrorCode, GrantCategory, GrantOptions, KeyRef, TestClock,
        Timestamp, Usage,
    };
    use proptest::prelude::*;
    use std::collections::HashMap;

    const USERS: [&str; 2] = ["ann", "ben"];
    const HOUR: i64 = 3_600_000_000;
    const NO_OPTS: EntryOptions<'static> = EntryOptions { idempotency_key: None, reference: None, metadata: None };

    #[derive(Clone, Debug)]
    pub enum Op {
        Credit { user: usize, kind: usize, micros: i64, promo: Option<bool>, priority: i32, hours: Option<i64> },
        Deduct { user: usize, micros: i64 },
        Adjust { user: usize, micros: i64 },
        Use { user: usize, tokens: i64 },
        Pay { user: usize, payment: u8, minor: i64, hours: Option<i64> },
        Reverse { payment: u8 },
        Advance { hours: i64 },
        Sweep,
    }

    const KINDS: [EntryKind; 4] = [EntryKind::Grant, EntryKind::Purchase, EntryKind::Refund, EntryKind::Adjustment];

    pub fn op_strategy() -> impl Strategy<Value = Op> {
        let user = 0..USERS.len();
        let micros = prop_oneof![3 => (1i64..=40).prop_map(|c| c * 250_000), 1 => 1i64..=3_000_000];
        let hours = proptest::option::of(1i64..=4);
        prop_oneof![
            5 => (user.clone(), 0..KINDS.len(), micros.clone(), proptest::option::of(any::<bool>()), -1i32..=2, hours.clone())
                .prop_map(|(user, kind, micros, promo, priority, hours)| Op::Credit { user, kind, micros, promo, priority, hours }),
            3 => (user.clone(), micros.clone()).prop_map(|(user, micros)| Op::Deduct { user, micros }),
            1 => (user.clone(), micros).prop_map(|(user, micros)| Op::Adjust { user, micros }),
            3 => (user.clone(), 0i64..=12_000).prop_map(|(user, tokens)| Op::Use { user, tokens }),
            2 => (user.clone(), 0u8..3, 1i64..=300, hours).prop_map(|(user, payment, minor, hours)| Op::Pay { user, payment, minor, hours }),
            1 => (0u8..3).prop_map(|payment| Op::Reverse { payment }),
            3 => (0i64..=2).prop_map(|hours| Op::Advance { hours }),
            1 => Just(Op::Sweep),
        ]
    }

    #[derive(Clone, Debug)]
    struct Lot {
        /// Creation order (grant ids increase with it).
        order: u64,
        promo: bool,
        priority: i32,
        /// The test clock's offset plus the lifetime, in hours: the real
        /// time between steps is far below an hour, so this orders and
        /// decides expiry exactly.
        expires: Option<i64>,
        remaining: i64,
        payment: Option<u8>,
    }

    #[derive(Default)]
    struct Model {
        hours: i64,
        balance: [i64; 2],
        lots: [Vec<Lot>; 2],
        next: u64,
        entries: u64,
        /// payment → (user, credits, reversed)
        payments: HashMap<u8, (usize, i64, bool)>,
    }

    impl Model {
        fn due(&self, u: usize) -> i64 {
            self.lots[u]
                .iter()
                .filter(|l| l.remaining > 0 && l.expires.is_some_and(|e| e <= self.hours))
                .map(|l| l.remaining)
                .sum()
        }

        /// Applies the due expiries (earliest first); returns (entries, micros).
        fn expire(&mut self, u: usize) -> (u64, i64) {
            let mut due: Vec<usize> = (0..self.lots[u].len())
                .filter(|&i| self.lots[u][i].remaining > 0 && self.lots[u][i].expires.is_some_and(|e| e <= self.hours))
                .collect();
            due.sort_by_key(|&i| (self.lots[u][i].expires, self.lots[u][i].order));
            let (mut n, mut total) = (0, 0);
            for i in due {
                let r = std::mem::take(&mut self.lots[u][i].remaining);
                self.balance[u] -= r;
                self.entries += 1;
                n += 1;
                total += r;
            }
            (n, total)
        }

        fn live(&self, u: usize) -> Vec<Lot> {
            let mut v: Vec<Lot> = self.lots[u]
                .iter()
                .filter(|l| l.remaining > 0 && l.expires.is_none_or(|e| e > self.hours))
                .cloned()
                .collect();
            v.sort_by_key(|l| (!l.promo, l.priority, l.expires.unwrap_or(i64::MAX), l.order));
            v
        }

        fn credit(
            &mut self,
            u: usize,
            micros: i64,
            promo: bool,
            priority: i32,
            expires: Option<i64>,
            payment: Option<u8>,
        ) {
            let was = self.balance[u].max(0);
            self.balance[u] += micros;
            let remaining = self.balance[u].max(0) - was;
            self.lots[u].push(Lot { order: self.next, promo, priority, expires, remaining, payment });
            self.next += 1;
            self.entries += 1;
        }

        /// A debit after the expiries; `first` is drawn before the order.
        fn debit(&mut self, u: usize, micros: i64, first: Option<u8>) {
            let was = self.balance[u].max(0);
            self.balance[u] -= micros;
            let mut left = was - self.balance[u].max(0);
            self.entries += 1;
            let mut order: Vec<u64> = Vec::new();
            if let Some(p) = first {
                order.extend(self.lots[u].iter().filter(|l| l.payment == Some(p)).map(|l| l.order));
            }
            order.extend(self.live(u).iter().map(|l| l.order));
            for o in order {
                let Some(l) = self.lots[u].iter_mut().find(|l| l.order == o) else { continue };
                let take = left.min(l.remaining);
                l.remaining -= take;
                left -= take;
            }
            assert_eq!(left, 0, "the model's grants cover its balance");
        }
    }

    pub struct Harness {
        m: CreditManager,
        clock: TestClock,
        keys: Vec<String>,
        model: Model,
        start: Timestamp,
        _guard: common::Guard,
    }

    impl Harness {
        pub fn new() -> Harness {
            let (m, clock, guard) = common::clocked_manager();
            let keys = USERS.iter().map(|u| m.create_api_key(u, None).unwrap().secret.expose().to_string()).collect();
            // The ledger's clock at the start: a key's created_at.
            let start = m.list_api_keys(USERS[0]).unwrap()[0].created_at;
            Harness { m, clock, keys, model: Model::default(), start, _guard: guard }
        }

        fn expires(&self, hours: Option<i64>) -> (Option<Timestamp>, Option<i64>) {
            match hours {
                // One hour from the start of the current model hour, plus a
                // margin below any real elapsed time between steps.
                Some(h) => {
                    let at = self.model.hours + h;
                    (Some(Timestamp(self.start.0 + at * HOUR - 1)), Some(at))
                }
                None => (None, None),
            }
        }

        pub fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
            match *op {
                Op::Credit { user, kind, micros, promo, priority, hours } => {
                    let (at, model_at) = self.expires(hours);
                    let category = promo.map(|p| if p { GrantCategory::Promotional } else { GrantCategory::Paid });
                    let o = GrantOptions { expires_at: at, category, priority };
                    let r =
                        self.m.add_credits_with(USERS[user], Credits::from_micros(micros), KINDS[kind], &NO_OPTS, &o);
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    let promo = promo.unwrap_or(KINDS[kind] == EntryKind::Grant);
                    self.model.expire(user);
                    self.model.credit(user, micros, promo, priority, model_at, None);
                }
                Op::Deduct { user, micros } | Op::Adjust { user, micros } => {
                    let r = if matches!(op, Op::Deduct { .. }) {
                        self.m.deduct_credits(USERS[user], Credits::from_micros(micros), &NO_OPTS)
                    } else {
                        self.m.add_credits(USERS[user], Credits::from_micros(-micros), EntryKind::Adjustment, &NO_OPTS)
                    };
                    if self.model.balance[user] - self.model.due(user) < micros {
                        prop_assert_eq!(
                            r.map(|_| ()).map_err(|e| e.code()),
                            Err(ErrorCode::InsufficientCredits),
                            "{:?}",
                            op
                        );
                    } else {
                        prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                        self.model.expire(user);
                        self.model.debit(user, micros, None);
                    }
                }
                Op::Use { user, tokens } => {
                    let usage = Usage::new(tokens, 0, None);
                    let r = self.m.record_usage(KeyRef::Secret(&self.keys[user]), usage, None);
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    self.model.expire(user);
                    self.model.debit(user, tokens * 1_000, None); // 1 credit per 1,000 tokens
                }
                Op::Pay { user, payment, minor, hours } => {
                    let (at, model_at) = self.expires(hours);
                    let o = GrantOptions { expires_at: at, ..GrantOptions::default() };
                    let r = self.m.record_payment_with(USERS[user], &format!("pay-{payment}"), minor, "usd", &o);
                    match self.model.payments.get(&payment) {
                        Some(&(u, c, _)) if u == user && c == minor * 10_000_000 => {
                            prop_assert!(r.is_ok_and(|e| e.replayed), "{:?}", op);
                        }
                        Some(_) => {
                            prop_assert_eq!(r.map(|_| ()).map_err(|e| e.code()), Err(ErrorCode::IdempotencyConflict));
                        }
                        None => {
                            prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                            self.model.payments.insert(payment, (user, minor * 10_000_000, false));
                            self.model.expire(user);
                            self.model.credit(user, minor * 10_000_000, false, 0, model_at, Some(payment));
                        }
                    }
                }
                Op::Reverse { payment } => {
                    let r = self.m.reverse_payment(&format!("pay-{payment}"), None, None, None);
                    match self.model.payments.get(&payment).copied() {
                        None => prop_assert_eq!(r.map(|_| ()).map_err(|e| e.code()), Err(ErrorCode::NotFound)),
                        Some((_, _, true)) => prop_assert!(r.is_ok_and(|e| e.replayed), "{:?}", op),
                        Some((u, c, false)) => {
                            let e = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                            self.model.expire(u);
                            let own = self.model.lots[u]
                                .iter()
                                .find(|l| l.payment == Some(payment))
                                .map_or(0, |l| l.remaining);
                            let meta = e.metadata.unwrap_or_default();
                            prop_assert_eq!(meta.get("from_grant_micros").and_then(|v| v.as_i64()), Some(own.min(c)));
                            prop_assert_eq!(
                                meta.get("already_spent_micros").and_then(|v| v.as_i64()),
                                Some(c - own.min(c))
                            );
                            self.model.debit(u, c, Some(payment));
                            self.model.payments.insert(payment, (u, c, true));
                        }
                    }
                }
                Op::Advance { hours } => {
                    self.clock.advance(hours * HOUR);
                    self.model.hours += hours;
                }
                Op::Sweep => {
                    let s = self.m.expire_grants(10).unwrap();
                    let (mut accounts, mut entries, mut total) = (0, 0, 0);
                    for u in 0..USERS.len() {
                        let (n, t) = self.model.expire(u);
                        accounts += u64::from(n > 0);
                        entries += n;
                        total += t;
                    }
                    prop_assert_eq!((s.accounts, s.entries, s.credits.micros()), (accounts, entries, total));
                }
            }
            self.check(op)
        }

        fn check(&self, op: &Op) -> Result<(), TestCaseError> {
            for (u, user) in USERS.iter().enumerate() {
                let effective = self.model.balance[u] - self.model.due(u);
                prop_assert_eq!(
                    self.m.get_balance(user).unwrap().micros(),
                    effective,
                    "balance of {} after {:?}",
                    user,
                    op
                );
                let got: Vec<(bool, i32, i64)> = self
                    .m
                    .account(user)
                    .unwrap()
                    .grants
                    .iter()
                    .map(|g| (g.category == GrantCategory::Promotional, g.priority, g.remaining.micros()))
                    .collect();
                let want: Vec<(bool, i32, i64)> =
                    self.model.live(u).iter().map(|l| (l.promo, l.priority, l.remaining)).collect();
                prop_assert_eq!(got, want, "grants of {} after {:?}", user, op);
            }
            let audit = self.m.audit().unwrap();
            prop_assert!(audit.ok, "audit after {:?}: {:?}", op, audit.mismatches);
            prop_assert_eq!(audit.entries_checked, self.model.entries, "entries after {:?}", op);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn grants_and_expiry_behave_like_the_model(ops in proptest::collection::vec(grants_model::op_strategy(), 1..40)) {
        let mut h = grants_model::Harness::new();
        for op in &ops {
            h.step(op)?;
        }
    }
}

// ----- organisations, budgets and an allowance on an injected clock ---------

mod orgs_model {
    //! A third model: an organisation whose two members join and leave,
    //! a project, daily member and project budgets, a daily allowance
    //! (rollover off) on the organisation, its own key; strict charges
    //! (reserve + settle) and charges that are never refused (record_usage)
    //! through the three keys, and the clock moving on in whole days (from
    //! noon, so real time between steps never crosses midnight). After every
    //! step the balances, the allowance's grant, the budgets' spent and
    //! remaining, and the audit must agree with the model.

    use super::common;
    use creditgate::{
        AllowanceSpec, BudgetLimit, BudgetScope, CreditManager, Credits, EntryKind, EntryOptions, Error, ErrorCode,
        HoldAmount, KeyId, KeyRef, LimitSource, Settlement, SpendWindow, TestClock, Usage,
    };
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000_000;
    const C: i64 = 1_000_000;
    const MEMBERS: [&str; 2] = ["m0", "m1"];
    const NO_OPTS: EntryOptions<'static> = EntryOptions { idempotency_key: None, reference: None, metadata: None };

    #[derive(Clone, Debug)]
    pub enum Op {
        Join {
            m: usize,
        },
        Leave {
            m: usize,
        },
        /// Key 0 and 1 are the members', 2 the organisation's own.
        Project {
            key: usize,
            on: bool,
        },
        MemberBudget {
            m: usize,
            limit: Option<i64>,
        },
        ProjectBudget {
            limit: Option<i64>,
        },
        Grant {
            credits: i64,
        },
        Allowance {
            credits: i64,
        },
        Charge {
            key: usize,
            credits: i64,
            strict: bool,
        },
        Advance {
            days: i64,
        },
    }

    pub fn op_strategy() -> impl Strategy<Value = Op> {
        let m = 0..MEMBERS.len();
        let limit = proptest::option::of(0i64..=40);
        prop_oneof![
            2 => m.clone().prop_map(|m| Op::Join { m }),
            1 => m.clone().prop_map(|m| Op::Leave { m }),
            2 => (0usize..3, any::<bool>()).prop_map(|(key, on)| Op::Project { key, on }),
            2 => (m, limit.clone()).prop_map(|(m, limit)| Op::MemberBudget { m, limit }),
            1 => limit.prop_map(|limit| Op::ProjectBudget { limit }),
            2 => (1i64..=50).prop_map(|credits| Op::Grant { credits }),
            1 => (1i64..=30).prop_map(|credits| Op::Allowance { credits }),
            8 => (0usize..3, 1i64..=25, any::<bool>()).prop_map(|(key, credits, strict)| Op::Charge { key, credits, strict }),
            2 => (0i64..=2).prop_map(|days| Op::Advance { days }),
        ]
    }

    /// Micros throughout. The organisation's balance and allowance grant
    /// as written: reads add a pending refill ([`Model::refill`] on a copy).
    #[derive(Clone, Default)]
    struct Model {
        day: i64,
        org: i64,
        own: [i64; 2],
        /// (amount, remaining of the current period's grant, its day).
        allowance: Option<(i64, i64, i64)>,
        member: [bool; 2],
        in_project: [bool; 3],
        member_limit: [Option<i64>; 2],
        project_limit: Option<i64>,
        /// Today's usage on the organisation by member.
        member_today: [i64; 2],
        /// The project budget's spent (counted while keys are in it).
        project_spent: i64,
        /// Today's usage through keys while they were in the project, as
        /// the entries record it (what a new project budget counts).
        project_today: i64,
    }

    impl Model {
        /// What the first write on the organisation of a day does, and what
        /// reads show before it: the allowance's grant of an earlier day
        /// expires, today's is issued (only today's after missed days).
        fn refill(&mut self) {
            if let Some((amount, left, day)) = self.allowance
                && day < self.day
            {
                self.org -= left;
                let was = self.org.max(0);
                self.org += amount;
                self.allowance = Some((amount, self.org.max(0) - was, self.day));
            }
        }

        fn credit(&mut self, micros: i64) {
            self.org += micros;
        }

        /// A debit of the organisation: its allowance's grant first.
        fn debit(&mut self, micros: i64) {
            let was = self.org.max(0);
            self.org -= micros;
            let taken = was - self.org.max(0);
            if let Some((_, left, _)) = self.allowance.as_mut() {
                *left -= taken.min(*left);
            }
        }

        fn pays(&self, key: usize) -> bool {
            key == 2 || self.member[key]
        }

        /// The limits a strict charge through `key` meets: (source, what it leaves).
        fn limits(&self, key: usize) -> Vec<(LimitSource, i64)> {
            if !self.pays(key) {
                return vec![(LimitSource::Account, self.own[key])];
            }
            let mut v = vec![(LimitSource::Account, self.org)];
            if key < 2
                && let Some(l) = self.member_limit[key]
            {
                v.push((LimitSource::Member, l - self.member_today[key]));
            }
            if self.in_project[key]
                && let Some(l) = self.project_limit
            {
                v.push((LimitSource::Project, l - self.project_spent));
            }
            v
        }
    }

    pub struct Harness {
        m: CreditManager,
        clock: TestClock,
        keys: Vec<(String, KeyId)>,
        model: Model,
        _guard: common::Guard,
    }

    impl Harness {
        pub fn new() -> Harness {
            let (m, clock, guard) = common::clocked_manager();
            let keys: Vec<(String, KeyId)> = ["m0", "m1", "org"]
                .iter()
                .map(|u| {
                    let k = m.create_api_key(u, None).unwrap();
                    (k.secret.expose().to_string(), k.key_id)
                })
                .collect();
            m.create_project("org", "p").unwrap();
            // Noon of the ledger's day: whole days on never cross midnight.
            let now = m.list_api_keys("org").unwrap()[0].created_at;
            clock.advance((DAY / 2 - now.0.rem_euclid(DAY)).rem_euclid(DAY));
            Harness { m, clock, keys, model: Model::default(), _guard: guard }
        }

        pub fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
            let code = |r: creditgate::Result<()>| r.map_err(|e| e.code());
            let md = &mut self.model;
            match *op {
                Op::Join { m } => {
                    prop_assert!(self.m.add_member("org", MEMBERS[m]).is_ok(), "{:?}", op);
                    md.member[m] = true;
                }
                Op::Leave { m } => {
                    let r = code(self.m.remove_member("org", MEMBERS[m]));
                    if md.member[m] {
                        prop_assert_eq!(r, Ok(()));
                        md.member[m] = false;
                        md.member_limit[m] = None;
                        md.in_project[m] = false;
                    } else {
                        prop_assert_eq!(r, Err(ErrorCode::NotFound));
                    }
                }
                Op::Project { key, on } => {
                    let r = code(self.m.set_key_project(self.keys[key].1, on.then_some("p")));
                    if on && !md.pays(key) {
                        prop_assert_eq!(r, Err(ErrorCode::NotFound), "{:?}", op);
                    } else {
                        prop_assert_eq!(r, Ok(()), "{:?}", op);
                        md.in_project[key] = on;
                    }
                }
                Op::MemberBudget { m, limit } => {
                    let l = limit.map(|c| BudgetLimit {
                        limit: Credits::from_micros(c * C),
                        window: SpendWindow::Daily,
                        low_threshold: None,
                    });
                    let r = code(self.m.set_budget("org", BudgetScope::Member(MEMBERS[m]), l));
                    if md.member[m] {
                        prop_assert_eq!(r, Ok(()));
                        md.member_limit[m] = limit.map(|c| c * C);
                    } else {
                        prop_assert_eq!(r, Err(ErrorCode::NotFound));
                    }
                }
                Op::ProjectBudget { limit } => {
                    let l = limit.map(|c| BudgetLimit {
                        limit: Credits::from_micros(c * C),
                        window: SpendWindow::Daily,
                        low_threshold: None,
                    });
                    prop_assert_eq!(code(self.m.set_budget("org", BudgetScope::Project("p"), l)), Ok(()));
                    md.project_limit = limit.map(|c| c * C);
                    md.project_spent = md.project_today;
                }
                Op::Grant { credits } => {
                    let r = self.m.add_credits("org", Credits::from_micros(credits * C), EntryKind::Grant, &NO_OPTS);
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    // A write on the organisation persists a due refill first.
                    md.refill();
                    md.credit(credits * C);
                }
                Op::Allowance { credits } => {
                    let spec = AllowanceSpec {
                        user: "org",
                        member: None,
                        key: None,
                        amount: Credits::from_micros(credits * C),
                        period: SpendWindow::Daily,
                        rollover_cap: None,
                    };
                    if md.allowance.is_some() {
                        return self.check(op); // one allowance is enough for the model
                    }
                    let r = self.m.set_allowance(&spec);
                    prop_assert!(r.is_ok(), "{:?}: {:?}", op, r);
                    let was = md.org.max(0);
                    md.org += credits * C;
                    md.allowance = Some((credits * C, md.org.max(0) - was, md.day));
                }
                Op::Charge { key, credits, strict } => {
                    let micros = credits * C;
                    let secret = self.keys[key].0.clone();
                    if strict {
                        // What a read shows: with a due refill (a refused
                        // reserve writes nothing).
                        let mut view = md.clone();
                        view.refill();
                        let limits = view.limits(key);
                        let least = limits.iter().map(|l| l.1).min().unwrap_or(0);
                        let r = self.m.reserve(&secret, HoldAmount::Credits(Credits::from_micros(micros)), 60, None);
                        if micros > least {
                            let Err(Error::InsufficientCredits { available, limit_source, .. }) = r else {
                                return Err(TestCaseError::fail(format!("{op:?}: want a refusal, got {r:?}")));
                            };
                            prop_assert_eq!(available.micros(), least, "{:?}", op);
                            let binding: Vec<_> = limits.iter().filter(|l| l.1 == least).map(|l| l.0).collect();
                            if binding.len() == 1 || binding[0] == LimitSource::Account {
                                prop_assert_eq!(limit_source, binding[0], "{:?}", op);
                            }
                            return self.check(op);
                        }
                        let h = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                        let s = self.m.settle(h.hold_id, Settlement::Credits(Credits::from_micros(micros)));
                        prop_assert!(s.is_ok(), "{:?}: {:?}", op, s);
                    } else {
                        let usage = Usage::new(credits * 1_000, 0, None);
                        let r = self.m.record_usage(KeyRef::Secret(&secret), usage, None);
                        prop_assert!(r.is_ok_and(|c| c.charged.micros() == micros), "{:?}", op);
                    }
                    if md.pays(key) {
                        md.refill();
                        md.debit(micros);
                        if key < 2 {
                            md.member_today[key] += micros;
                        }
                        if md.in_project[key] {
                            md.project_spent += micros;
                            md.project_today += micros;
                        }
                    } else {
                        md.own[key] -= micros;
                    }
                }
                Op::Advance { days } => {
                    self.clock.advance(days * DAY);
                    if days > 0 {
                        md.day += days;
                        md.member_today = [0; 2];
                        md.project_spent = 0;
                        md.project_today = 0;
                    }
                }
            }
            self.check(op)
        }

        fn check(&self, op: &Op) -> Result<(), TestCaseError> {
            let written = &self.model;
            let mut md = self.model.clone();
            md.refill();
            prop_assert_eq!(self.m.get_balance("org").unwrap().micros(), md.org, "org after {:?}", op);
            for (i, u) in MEMBERS.iter().enumerate() {
                prop_assert_eq!(self.m.get_balance(u).unwrap().micros(), md.own[i], "{} after {:?}", u, op);
            }
            let grants = self.m.account("org").unwrap().grants;
            let allowance: i64 = grants.iter().filter(|g| g.allowance_id.is_some()).map(|g| g.remaining.micros()).sum();
            // Compared once written: a read lists a pending refill at its full
            // amount even on an account in debt, where the write repays the
            // debt first (a core bug, pinned by tests/organisations.rs
            // `a_pending_refill_on_an_account_in_debt_reads_as_it_will_be_written`).
            if written.allowance == md.allowance {
                prop_assert_eq!(allowance, md.allowance.map_or(0, |a| a.1), "allowance grant after {:?}", op);
            }
            let members = self.m.members("org").unwrap();
            let joined: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
            let want: Vec<&str> = (0..2).filter(|&i| md.member[i]).map(|i| MEMBERS[i]).collect();
            prop_assert_eq!(joined, want, "members after {:?}", op);
            for m in &members {
                let i = MEMBERS.iter().position(|u| *u == m.user_id).unwrap();
                let b = m.budget.as_ref().map(|b| (b.limit.micros(), b.spent.micros(), b.remaining.micros()));
                let want = md.member_limit[i].map(|l| (l, md.member_today[i], l - md.member_today[i]));
                prop_assert_eq!(b, want, "{}'s budget after {:?}", m.user_id, op);
            }
            let p = self.m.projects("org").unwrap().remove(0);
            let b = p.budget.map(|b| (b.limit.micros(), b.spent.micros()));
            prop_assert_eq!(b, md.project_limit.map(|l| (l, md.project_spent)), "project budget after {:?}", op);
            prop_assert_eq!(p.keys, md.in_project.iter().filter(|&&x| x).count() as u32);
            let audit = self.m.audit().unwrap();
            prop_assert!(audit.ok, "audit after {:?}: {:?}", op, audit.mismatches);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_config(32))]

    #[test]
    fn organisations_behave_like_the_model(ops in proptest::collection::vec(orgs_model::op_strategy(), 1..40)) {
        let mut h = orgs_model::Harness::new();
        for op in &ops {
            h.step(op)?;
        }
    }
}
