//! Every SQL statement both stores run, written once in PostgreSQL's dialect
//! (`$n` placeholders, `::type` casts where PostgreSQL needs a type) and
//! translated for SQLite once, when the table is first used ([`S`]):
//! `$n` becomes `?n`, casts are dropped (SQLite's columns carry their own
//! affinity) and `GREATEST`/`LEAST` become SQLite's scalar `MAX`/`MIN`
//! ([`to_sqlite`]). The stores then prepare the text they are handed with
//! their statement caches (`prepare_cached`, `PgConn::stmts`), so the hot
//! paths pay nothing for the translation.
//!
//! The ledger's rules are named fragments composed into the statements,
//! each written once: [`available`] (balance − floor − active holds − grants
//! due to expire), [`key_remaining`] (a key cap's remainder), [`key_usable`],
//! [`grant_order`] (the draw-down order) and [`RATE_ROW_HAS_LIMITS`].
//!
//! Statements that remain per backend, and why:
//!
//! | statement | rule it encodes | why it differs |
//! | --- | --- | --- |
//! | `lifetime`, `key_usage_since`, `due_grants_total`, `scan_grants` | gross sums of i64 amounts | SQLite's `SUM` fails on i64 overflow, so SQLite streams rows and sums in i128 in Rust; PostgreSQL sums in `NUMERIC` on the server (one row instead of every entry) |
//! | `events` (and its cursor check) | outbox events in commit order | SQLite ids are in commit order (one writer); PostgreSQL orders by `(txid, id)` below the snapshot's xmin |
//! | `touch_keys` | `last_used_at` is lazy | PostgreSQL updates every key in one statement and skips rows another transaction holds (`SKIP LOCKED`); SQLite has one writer and runs one cached update per key |
//! | `lock_account`, `ensure_account`'s lock, PostgreSQL's `lock_and_entry_by_key` | the account row lock of every write | SQLite's write transaction already holds the database; PostgreSQL locks the row (`FOR NO KEY UPDATE`), and on the charge path locks, looks up the idempotency key and prefetches the first batch of `live_grants` in one round trip (tests: `tests/concurrency.rs`, `tests/payments.rs`, `tests/multihost.rs` on PostgreSQL) |
//! | the clock of [`verify`] | `now` of the verify statement | one template; SQLite binds the process clock, PostgreSQL uses the statement's start outside a transaction (`peek`). Both backends run every test of `tests/verify_cache.rs`, `tests/key_policy.rs`, `tests/grants.rs` and `tests/holds.rs` against it |
//! | [`apply`]'s shape (the condition [`apply_allows`] is shared) | the conditional balance update, returning the row before and after for the manager's invariant check | PostgreSQL returns the old row from the update itself (self-join, [`APPLY_RETURNING_BEFORE`]); SQLite's RETURNING cannot name a FROM table, so SQLite reads `balance_and_seq` first under its write lock (tests: `tests/invariants.rs`, `tests/model.rs` on both backends) |
//! | `ensure_account`, and the account's `refill_at` | the account row exists, and when its next allowance refill is due | SQLite upserts and returns `refill_at` in one statement (its write transaction holds the database); PostgreSQL reads it with the row lock (`LOCK_ACCOUNT`, `LOCK_AND_ENTRY_BY_KEY`), so a charge asks no more round trips (tests: `tests/organisations.rs`, `tests/org_model.rs`, `tests/model.rs` on both backends) |
//! | `live_grants`' `LIMIT` | – | SQLite's planner weighs a bound `LIMIT`, so rebinding one re-parses: SQLite writes the limit into the text, PostgreSQL binds it |
//! | schema bookkeeping, `NOW`, the verify cache's `fresh_until` | – | the catalogs and the clocks are the backends' own; `fresh_until` serves SQLite's verify cache only |
//! | indexes of 009: `creditgate_entries_time`, the global-key index | – | SQLite indexes `(user_id, created_at)` (no bitmap scans; its gate rows hold); PostgreSQL indexes `created_at` alone, as a key led by the account's text cost its durable one-caller charge 12 %, and makes the global-key index partial (`NOT NULL`: usage entries skip it); SQLite would need a table rebuild for that (BENCHMARKS.md, issue 20) |

use crate::limits::MAX_SUMMARY_ROWS;
use crate::types::EntryKind;
use std::sync::LazyLock;

/// One statement, in both dialects.
pub(crate) struct Sql {
    pg: String,
    sqlite: String,
    /// Kept in the connections' statement caches (false: prepared for one
    /// run, for texts built per call that would crowd the hot paths out).
    pub(crate) cached: bool,
}

impl Sql {
    pub(crate) fn new(pg: String) -> Sql {
        let sqlite = to_sqlite(&pg);
        Sql { pg, sqlite, cached: true }
    }

    /// A statement run once, not kept in the statement caches.
    pub(crate) fn once(pg: String) -> Sql {
        Sql { cached: false, ..Sql::new(pg) }
    }

    /// The PostgreSQL text.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn pg(&self) -> &str {
        &self.pg
    }

    /// The SQLite text.
    pub(crate) fn sqlite(&self) -> &str {
        &self.sqlite
    }
}

/// PostgreSQL's functions SQLite spells otherwise (`STRPOS(s, sub)` and
/// `INSTR(s, sub)`: the same arguments, the same 1-based answer, 0 when absent).
const FUNCTIONS: [(&str, &str); 3] = [("GREATEST(", "MAX("), ("LEAST(", "MIN("), ("STRPOS(", "INSTR(")];

/// Translates a statement of the shared dialect for SQLite: `$n` → `?n`,
/// `::type` casts dropped, `GREATEST(`/`LEAST(`/`STRPOS(` →
/// `MAX(`/`MIN(`/`INSTR(`. Quoted text is copied as it is.
pub(crate) fn to_sqlite(pg: &str) -> String {
    let b = pg.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = String::with_capacity(pg.len());
    let (mut i, mut quoted) = (0, false);
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            quoted = !quoted;
        } else if !quoted && c == b'$' {
            out.push('?');
            i += 1;
            continue;
        } else if !quoted && c == b':' && b.get(i + 1) == Some(&b':') {
            i += 2;
            while i < b.len() && (ident(b[i]) || b[i] == b'[' || b[i] == b']') {
                i += 1;
            }
            continue;
        } else if !quoted
            && (i == 0 || !ident(b[i - 1]))
            && let Some((from, to)) = FUNCTIONS.iter().find(|(from, _)| pg[i..].starts_with(from))
        {
            out.push_str(to);
            i += from.len();
            continue;
        }
        // Multi-byte characters are copied whole.
        let len = pg[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pg[i..i + len]);
        i += len;
    }
    out
}

// ----- the rules, each written once -----------------------------------------

/// Whether a key's rate-limits row `r` holds a limit. Lifting a key's
/// limits sets both to NULL and keeps the row, so a minute's counts are never
/// reset by lifting and setting limits again: requests a process leased stay
/// counted (`CreditManager::take_request`).
pub(crate) const RATE_ROW_HAS_LIMITS: &str = "(r.requests_per_minute IS NOT NULL OR r.tokens_per_minute IS NOT NULL)";

/// Active holds of `user` not yet expired at `now` (SQL expressions).
pub(crate) fn held(user: &str, now: &str) -> String {
    format!(
        "COALESCE((SELECT SUM(h.amount) FROM creditgate_holds h \
         WHERE h.user_id = {user} AND h.status = 'active' AND h.expires_at > {now}), 0)"
    )
}

/// What `user`'s grants past their expiry at `now` still hold: not yet
/// applied as `expiry` entries (the next write of the account applies them).
pub(crate) fn due(user: &str, now: &str) -> String {
    format!(
        "COALESCE((SELECT SUM(g.remaining) FROM creditgate_grants g \
         WHERE g.user_id = {user} AND g.remaining > 0 AND g.expires_at <= {now}), 0)"
    )
}

/// What strict operations may still take from the account row `a` of
/// `user` at `now`: balance − the floor (`min_balance` ≤ 0) − active holds −
/// grants due to expire. NUMERIC on PostgreSQL, so it cannot overflow; an
/// absent account (a NULL row of a LEFT JOIN) has balance and floor 0.
pub(crate) fn available(a: &str, user: &str, now: &str) -> String {
    format!("(COALESCE({a}.balance::numeric - {a}.min_balance, 0) - {} - {})", held(user, now), due(user, now))
}

/// What the spend cap of key `k` (joined with its counter `s`) still allows
/// at `now`: limit − spent in the current window − the key's active holds,
/// clamped to BIGINT; NULL without a cap.
pub(crate) fn key_remaining(now: &str) -> String {
    format!(
        "CASE WHEN k.spend_limit IS NULL THEN NULL ELSE GREATEST(k.spend_limit::numeric \
         - (CASE WHEN s.window_end > {now} THEN s.spent ELSE 0 END) \
         - COALESCE((SELECT SUM(kh.amount) FROM creditgate_holds kh \
            WHERE kh.api_key_id = k.id AND kh.status = 'active' AND kh.expires_at > {now}), 0), \
         -9223372036854775808)::bigint END"
    )
}

/// Key `k` counts as active at `now`: neither revoked nor expired
/// (disabled keys count: they may be enabled again).
pub(crate) fn key_active(k: &str, now: &str) -> String {
    format!("{k}.revoked_at IS NULL AND ({k}.expires_at IS NULL OR {k}.expires_at > {now})")
}

/// Entry kinds as an SQL list (`'usage', 'deduct'`), for `IN (…)`: the
/// report's kind lists (`Report::PURCHASED_KINDS`, `Report::USED_KINDS`)
/// written into statements.
pub(crate) fn kinds_sql(kinds: &[EntryKind]) -> String {
    kinds.iter().map(|k| format!("'{}'", k.as_str())).collect::<Vec<_>>().join(", ")
}

/// The UTC midnight starting the day of the timestamp `t` (µs; floored,
/// also before the epoch).
pub(crate) fn utc_day(t: &str) -> String {
    const DAY: i64 = crate::types::DAY_MICROS;
    format!("({t} - (({t} % {DAY}) + {DAY}) % {DAY})")
}

/// Key `k` verifies at `now` as far as the database decides: not disabled,
/// not expired (revocation is answered by the manager with its own error).
pub(crate) fn key_usable(now: &str) -> String {
    format!("k.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > {now})")
}

/// The order of `live_grants`, at `now`, for a charge by `member` through
/// `key` (SQL expressions, NULL when there is none): grants past their
/// expiry first (by expiry, id), then the draw-down order: grants reserved
/// for this member or key, then the account's own allowances, then the
/// others — promotional before paid, lower priority, earliest expiry (none
/// last), lowest id —, and grants reserved for another member or key last
/// (only an overdraft reaches them).
pub(crate) fn grant_order(now: &str, member: &str, key: &str) -> String {
    format!(
        "CASE WHEN expires_at <= {now} THEN 0 ELSE 1 END, \
         CASE WHEN expires_at <= {now} THEN expires_at END, CASE WHEN expires_at <= {now} THEN id END, \
         CASE WHEN member_id IS NULL AND api_key_id IS NULL THEN (CASE WHEN allowance_id IS NULL THEN 2 ELSE 1 END) \
              WHEN member_id = {member} OR api_key_id = {key} THEN 0 ELSE 3 END, \
         CASE category WHEN 'promotional' THEN 0 ELSE 1 END, priority, \
         COALESCE(expires_at, 9223372036854775807), id"
    )
}

/// What `user`'s live grants reserved for a member or key other than
/// `member`/`key` still hold at `now`: strict checks of a charge by
/// `member` through `key` never count them as available.
pub(crate) fn reserved_elsewhere(user: &str, now: &str, member: &str, key: &str) -> String {
    format!(
        "COALESCE((SELECT SUM(g.remaining) FROM creditgate_grants g WHERE g.user_id = {user} AND g.remaining > 0 \
         AND (g.expires_at IS NULL OR g.expires_at > {now}) AND (g.member_id IS NOT NULL OR g.api_key_id IS NOT NULL) \
         AND NOT (COALESCE(g.member_id = {member}, FALSE) OR COALESCE(g.api_key_id = {key}, FALSE))), 0)"
    )
}

/// What budget row `b` (of its organisation `b.org_id`) still allows at
/// `now`: limit − spent in the current window − the active holds placed
/// through its keys (`keys` selects them from `bk`, the hold's key),
/// clamped to BIGINT; NULL without a budget.
pub(crate) fn budget_remaining(b: &str, keys: &str, now: &str) -> String {
    format!(
        "CASE WHEN {b}.spend_limit IS NULL THEN NULL ELSE GREATEST({b}.spend_limit::numeric \
         - (CASE WHEN {b}.window_end > {now} THEN {b}.spent ELSE 0 END) \
         - COALESCE((SELECT SUM(bh.amount) FROM creditgate_holds bh JOIN creditgate_api_keys bk ON bk.id = bh.api_key_id \
            WHERE bh.user_id = {b}.org_id AND bh.status = 'active' AND bh.expires_at > {now} AND {keys}), 0), \
         -9223372036854775808)::bigint END"
    )
}

/// Reserved for member $2 (or one of its keys) or for key $3.
const SCOPED_TO: &str = "(member_id = $2::text OR api_key_id = $3::uuid \
     OR api_key_id IN (SELECT id FROM creditgate_api_keys WHERE user_id = $2::text))";

/// The exact sum of an i64 expression as two BIGINT columns, its high and
/// low 32 bits summed apart (the store adds them in i128): SQLite's `SUM`
/// fails past the i64 range, and two sums of 32-bit halves cannot reach it
/// below 2^31 rows. The one form of every analytics sum of amounts.
pub(crate) fn split_sum(expr: &str) -> String {
    format!("COALESCE(SUM(({expr}) >> 32), 0)::bigint, COALESCE(SUM(({expr}) & 4294967295), 0)::bigint")
}

/// A group's count of entries and token sums (tokens are at most 10^9 per
/// entry, so a BIGINT sum holds 9 × 10^9 entries).
pub(crate) const USAGE_SUMS: &str = "COUNT(*), COALESCE(SUM(e.input_tokens), 0)::bigint, \
     COALESCE(SUM(e.output_tokens), 0)::bigint, COALESCE(SUM(e.cached_tokens), 0)::bigint, \
     COALESCE(SUM(e.cache_write_tokens), 0)::bigint";

/// The groups of the daily rollup of the entries `filter` selects: the
/// UTC day of `created_at` (its midnight, floored also before the epoch),
/// kind, model and currency ('' for none), then the count, the amounts as
/// [`split_sum`]'s halves and the token sums (`store/rollup.rs` reads them).
pub(crate) fn day_groups(filter: &str) -> String {
    format!(
        "SELECT {}, e.kind, COALESCE(e.model, ''), COALESCE(e.currency, ''), COUNT(*), {}, {}, \
         COALESCE(SUM(e.input_tokens), 0)::bigint, COALESCE(SUM(e.output_tokens), 0)::bigint, \
         COALESCE(SUM(e.cached_tokens), 0)::bigint, COALESCE(SUM(e.cache_write_tokens), 0)::bigint \
         FROM creditgate_entries e WHERE {filter} GROUP BY 1, 2, 3, 4",
        utc_day("e.created_at"),
        split_sum("e.amount"),
        split_sum("COALESCE(e.amount_minor, 0)")
    )
}

/// The account a key's charges move: its owner's organisation when the
/// owner is a member of one (`m`, joined by [`KEY_FROM`]), else the owner.
pub(crate) const PAYING: &str = "COALESCE(m.org_id, k.user_id)";

// ----- column lists (one per row type; `rows.rs` maps them) ----------------

pub(crate) const ENTRY_COLS: &str = "id, seq, user_id, kind, amount, balance_after, idempotency_key, reference, \
     api_key_id, input_tokens, output_tokens, model, amount_minor, currency, metadata, created_at, member_id, project, \
     cached_tokens, cache_write_tokens, input_rate, output_rate, cached_rate, cache_write_rate, request_fee";
/// Columns of `KEY_FROM`: the key, its spend counter, its owner's
/// organisation and its project.
pub(crate) const KEY_COLS: &str = "k.id, k.user_id, k.name, k.prefix, k.legacy, k.created_at, k.last_used_at, \
     k.revoked_at, k.expires_at, k.disabled_at, k.rotated_to, k.spend_limit, k.spend_window, s.window_end, s.spent, \
     m.org_id, k.project";
/// How many columns [`KEY_COLS`] has.
pub(crate) const KEY_COL_COUNT: usize = 17;
/// Keys with their spend counter and their owner's membership.
pub(crate) const KEY_FROM: &str = "creditgate_api_keys k LEFT JOIN creditgate_key_spend s ON s.api_key_id = k.id \
     LEFT JOIN creditgate_members m ON m.user_id = k.user_id";
pub(crate) const HOLD_COLS: &str = "id, user_id, api_key_id, amount, model, request_id, status, expires_at, created_at, \
     input_rate, output_rate, cached_rate, cache_write_rate, request_fee";
/// A price version's rates (`rows::price`).
pub(crate) const PRICE_COLS: &str = "input_per_1k, output_per_1k, cached_input_per_1k, cache_write_per_1k, request_fee";
pub(crate) const GRANT_COLS: &str = "id, user_id, entry_id, category, priority, amount, remaining, expires_at, \
     created_at, payment_id, member_id, api_key_id, allowance_id";
pub(crate) const ACCOUNT_COLS: &str = "balance, first_key_issued, created_at, min_balance, refill_at";
/// An account's auto top-up rule (`store/topups.rs`).
pub(crate) const TOPUP_RULE_COLS: &str =
    "topup_threshold, topup_kind, topup_amount, topup_max_per_month, topup_monthly_cap";
pub(crate) const TOPUP_COLS: &str = "id, user_id, amount, status, reason, entry_id, created_at, updated_at";
/// A webhook subscription's columns (`store/webhooks.rs`).
pub(crate) const WEBHOOK_COLS: &str = "w.id, w.url, w.kinds, w.enabled, w.description, w.created_at, w.cursor_id, w.attempts, \
    w.next_attempt_at, w.last_error, w.delivered, w.failed_attempts, \
    (SELECT COUNT(*) FROM creditgate_webhook_dead_letters d WHERE d.subscription_id = w.id), w.secret";
pub(crate) const DEAD_LETTER_COLS: &str = "subscription_id, event_id, kind, attempts, last_error, dead_at, requeued";

pub(crate) const BUDGET_COLS: &str =
    "scope, name, spend_limit, spend_window, low_threshold, window_start, window_end, spent";
pub(crate) const ALLOWANCE_COLS: &str =
    "id, user_id, member_id, api_key_id, amount, period, rollover_cap, next_refill_at, created_at";

/// A key's standing at `now`: [`KEY_COLS`], what its paying account has
/// [`available`] for it (less the grants [`reserved_elsewhere`]), its
/// [`key_remaining`], its rate counts, its member's and its project's
/// [`budget_remaining`], the account's next allowance refill and its auto
/// top-up threshold (a reserve's crossing check). `now` is
/// the backend's clock expression (see the table above); `which` selects
/// the key.
fn standing(now: &str, which: &str) -> String {
    format!(
        "SELECT {KEY_COLS}, ({} - {})::bigint, {}, COALESCE({RATE_ROW_HAS_LIMITS}, FALSE), \
         r.requests_per_minute, r.tokens_per_minute, r.window_start, r.tokens, {}, {}, a.refill_at, \
         COALESCE(a.refill_at <= {now}, FALSE), a.topup_threshold \
         FROM {KEY_FROM} LEFT JOIN creditgate_accounts a ON a.user_id = {PAYING} \
         LEFT JOIN creditgate_key_rate_limits r ON r.api_key_id = k.id \
         LEFT JOIN creditgate_budgets bm ON bm.org_id = m.org_id AND bm.scope = 'member' AND bm.name = k.user_id \
         LEFT JOIN creditgate_budgets bp ON bp.org_id = {PAYING} AND bp.scope = 'project' AND bp.name = k.project \
         WHERE {which}",
        available("a", PAYING, now),
        reserved_elsewhere(PAYING, now, "k.user_id", "k.id"),
        key_remaining(now),
        budget_remaining("bm", "bk.user_id = bm.name", now),
        budget_remaining("bp", "bk.project = bp.name", now),
    )
}

/// The verify statement: the [`standing`] of the key with hash `$1` (of
/// kind `$2`, when not NULL) if usable at `now`.
pub(crate) fn verify(now: &str) -> String {
    standing(now, &format!("k.key_hash = $1 AND ($2::text IS NULL OR k.hash_kind = $2::text) AND {}", key_usable(now)))
}

/// The audit's payment checks: each row is (user_id, problem, detail).
/// `'reinstatement:'` is 14 characters, so a reinstatement's reversal has
/// the global key `'reversal:' || substr(global_key, 15)`.
const PAYMENT_PROBLEMS: &str = "\
    SELECT p.user_id, 'payment_over_reversed', 'payment ' || r.reference || ' paid ' || \
           CAST(p.amount_minor AS TEXT) || ' minor units, reversed net of reinstatements ' || \
           CAST(SUM(CASE WHEN r.kind = 'reversal' THEN r.amount_minor ELSE -r.amount_minor END) AS TEXT) \
    FROM creditgate_entries r JOIN creditgate_entries p ON p.global_key = 'payment:' || r.reference \
    WHERE r.kind IN ('reversal', 'reinstatement') \
    GROUP BY p.user_id, r.reference, p.amount_minor \
    HAVING SUM(CASE WHEN r.kind = 'reversal' THEN r.amount_minor ELSE -r.amount_minor END) < 0 \
        OR SUM(CASE WHEN r.kind = 'reversal' THEN r.amount_minor ELSE -r.amount_minor END) > p.amount_minor \
    UNION ALL \
    SELECT i.user_id, 'reinstatement_mismatch', 'reinstatement ' || i.global_key || ' does not restore its reversal' \
    FROM creditgate_entries i LEFT JOIN creditgate_entries r ON r.global_key = 'reversal:' || substr(i.global_key, 15) \
    WHERE i.kind = 'reinstatement' AND (r.user_id IS NULL OR r.user_id <> i.user_id OR r.amount <> -i.amount \
          OR COALESCE(r.amount_minor, -1) <> COALESCE(i.amount_minor, -1))";

/// Counts a request in the key's current window (`$2`) when neither limit is
/// used up there; a new window starts from zero. One statement: atomic (on
/// PostgreSQL, under READ COMMITTED a concurrent update makes the server
/// recheck the WHERE clause on the new row version).
const TAKE_REQUESTS: &str = "UPDATE creditgate_key_rate_limits SET \
     requests = CASE WHEN window_start = $2 THEN requests + $3 ELSE $3 END, \
     tokens = CASE WHEN window_start = $2 THEN tokens ELSE 0 END, window_start = $2 \
     WHERE api_key_id = $1 \
     AND (requests_per_minute IS NULL \
       OR CASE WHEN window_start = $2 THEN requests ELSE 0 END + $3 <= requests_per_minute) \
     AND (tokens_per_minute IS NULL OR CASE WHEN window_start = $2 THEN tokens ELSE 0 END < tokens_per_minute)";

/// Adds a charge to a key's counter for the window [$2, $3): the CASEs read
/// the old row: a later window restarts the counter, the same one adds
/// (saturating at i64::MAX; charges are positive), an earlier one leaves it.
const ADD_KEY_SPEND: &str = "INSERT INTO creditgate_key_spend AS t (api_key_id, window_start, window_end, spent) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (api_key_id) DO UPDATE SET \
     spent = CASE WHEN t.window_start < EXCLUDED.window_start THEN EXCLUDED.spent \
                  WHEN t.window_start > EXCLUDED.window_start THEN t.spent \
                  WHEN t.spent > 9223372036854775807 - EXCLUDED.spent THEN 9223372036854775807 \
                  ELSE t.spent + EXCLUDED.spent END, \
     window_end = CASE WHEN t.window_start < EXCLUDED.window_start THEN EXCLUDED.window_end ELSE t.window_end END, \
     window_start = CASE WHEN t.window_start < EXCLUDED.window_start THEN EXCLUDED.window_start \
                         ELSE t.window_start END";

/// When the conditional balance update may happen (the alias `a` is the
/// account row): the sum stays in BIGINT ($3..=$4) and, when $5 (strict),
/// [`available`] at $6 covers the amount $2. Written once for both shapes
/// of the update.
fn apply_allows() -> String {
    format!(
        "a.user_id = $1 AND a.balance BETWEEN $3::bigint AND $4::bigint AND (NOT $5::boolean OR {} + $2::bigint >= 0)",
        available("a", "$1", "$6::bigint")
    )
}

/// PostgreSQL's [`apply`]: the same update, also returning the row as it
/// was before it (the self-join `o`), so the manager's invariant check
/// costs no round trip. SQLite's RETURNING cannot name a FROM table.
#[cfg(feature = "postgres")]
pub(crate) static APPLY_RETURNING_BEFORE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE creditgate_accounts AS a SET balance = a.balance + $2::bigint, last_seq = a.last_seq + 1 \
         FROM (SELECT balance, last_seq FROM creditgate_accounts WHERE user_id = $1) AS o \
         WHERE {} RETURNING a.balance, a.last_seq, o.balance, o.last_seq, a.topup_threshold",
        apply_allows()
    )
});

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        /// The shared statements; see the module's documentation.
        pub(crate) struct Statements {
            $($(#[$doc])* pub(crate) $name: Sql,)*
        }

        /// The statement table, built and translated once.
        pub(crate) static S: LazyLock<Statements> =
            LazyLock::new(|| Statements { $($name: Sql::new(String::from($sql)),)* });

        #[cfg(test)]
        impl Statements {
            /// Every statement with its name.
            fn all(&self) -> Vec<(&'static str, &Sql)> {
                vec![$((stringify!($name), &self.$name),)*]
            }
        }
    };
}

statements! {
    /// Creates the account row ($1, created at $2) unless it exists (one row
    /// changed when it did not).
    ensure_account = "INSERT INTO creditgate_accounts (user_id, created_at) VALUES ($1, $2) \
        ON CONFLICT (user_id) DO NOTHING";
    account = format!("SELECT {ACCOUNT_COLS} FROM creditgate_accounts WHERE user_id = $1");
    held = format!("SELECT {}::bigint", held("$1", "$2::bigint"));
    /// [`available`] of user $1 at $2, with or without an account row.
    available = format!(
        "SELECT {}::bigint FROM (SELECT 1) AS one LEFT JOIN creditgate_accounts a ON a.user_id = $1",
        available("a", "$1", "$2::bigint")
    );
    /// Adds $2 to the balance of $1 and takes the next seq, when the balance
    /// stays in BIGINT ($3..=$4) and, when $5 (strict), [`available`] at $6
    /// covers it. Also returns the account's auto top-up threshold (NULL:
    /// no rule), so an account without a rule asks nothing more.
    apply = format!(
        "UPDATE creditgate_accounts AS a SET balance = a.balance + $2::bigint, last_seq = a.last_seq + 1 \
         WHERE {} RETURNING balance, last_seq, topup_threshold",
        apply_allows()
    );
    /// The balance and last seq of $1 (SQLite reads them before [`apply`]
    /// under its write lock; PostgreSQL's [`APPLY_RETURNING_BEFORE`] returns
    /// them from the update itself).
    balance_and_seq = "SELECT balance, last_seq FROM creditgate_accounts WHERE user_id = $1";
    insert_entry = "INSERT INTO creditgate_entries (id, seq, user_id, kind, amount, balance_after, idempotency_key, \
        global_key, reference, api_key_id, input_tokens, output_tokens, model, amount_minor, currency, metadata, \
        created_at, member_id, project, cached_tokens, cache_write_tokens, input_rate, output_rate, cached_rate, \
        cache_write_rate, request_fee) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
        $23, $24, $25, $26)";
    entry_by_key = format!("SELECT {ENTRY_COLS} FROM creditgate_entries WHERE user_id = $1 AND idempotency_key = $2");
    entry_by_global_key = format!("SELECT {ENTRY_COLS} FROM creditgate_entries WHERE global_key = $1");
    entry_by_id = format!("SELECT {ENTRY_COLS} FROM creditgate_entries WHERE id = $1");
    /// (minor units, micro-credits) reversed of payment $1, not counting
    /// reversals since reinstated ('reversal:' is 9 characters).
    reversed_total = "SELECT COALESCE(SUM(r.amount_minor), 0)::bigint, COALESCE(SUM(-r.amount), 0)::bigint \
        FROM creditgate_entries r WHERE r.reference = $1 AND r.kind = 'reversal' AND NOT EXISTS \
        (SELECT 1 FROM creditgate_entries i WHERE i.global_key = 'reinstatement:' || substr(r.global_key, 10))";
    entries = format!(
        "SELECT {ENTRY_COLS} FROM creditgate_entries WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
    );
    has_purchase = "SELECT 1 FROM creditgate_entries WHERE user_id = $1 AND kind = 'purchase' LIMIT 1";

    key_by_hash = format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.key_hash = $1");
    key_by_hash_kind = format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.key_hash = $1 AND k.hash_kind = $2");
    key_by_id = format!("SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.id = $1");
    /// The [`standing`] of key $1 at $2, whatever its state.
    standing_by_id = standing("$2::bigint", "k.id = $1");
    keys = format!(
        "SELECT {KEY_COLS} FROM {KEY_FROM} WHERE k.user_id = $1 ORDER BY k.created_at DESC, k.id DESC LIMIT $2"
    );
    active_keys = format!("SELECT COUNT(*) FROM creditgate_api_keys k WHERE k.user_id = $1 AND {}", key_active("k", "$2"));
    insert_key = "INSERT INTO creditgate_api_keys (id, user_id, name, prefix, key_hash, hash_kind, legacy, created_at, \
        expires_at, spend_limit, spend_window) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    set_key_expiry = "UPDATE creditgate_api_keys SET expires_at = $2 WHERE id = $1";
    disable_key = "UPDATE creditgate_api_keys SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL";
    enable_key = "UPDATE creditgate_api_keys SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL";
    set_key_rotated = "UPDATE creditgate_api_keys SET rotated_to = $2, \
        expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END WHERE id = $1";
    set_key_limit = "UPDATE creditgate_api_keys SET spend_limit = $2, spend_window = $3 WHERE id = $1";
    revoke_key = "UPDATE creditgate_api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
    put_key_spend = "INSERT INTO creditgate_key_spend (api_key_id, window_start, window_end, spent) \
        VALUES ($1, $2, $3, $4) ON CONFLICT (api_key_id) DO UPDATE SET window_start = EXCLUDED.window_start, \
        window_end = EXCLUDED.window_end, spent = EXCLUDED.spent";
    add_key_spend = ADD_KEY_SPEND;
    set_first_key_issued = "UPDATE creditgate_accounts SET first_key_issued = TRUE WHERE user_id = $1";
    set_min_balance = "UPDATE creditgate_accounts SET min_balance = $2 WHERE user_id = $1";
    tally_key_attempt = "INSERT INTO creditgate_key_attempts AS t (user_id, day, attempts, successes) \
        VALUES ($1, $2, 1, $3) ON CONFLICT (user_id, day) DO UPDATE SET attempts = t.attempts + 1, \
        successes = t.successes + EXCLUDED.successes";

    expire_holds = "UPDATE creditgate_holds SET status = 'expired' \
        WHERE user_id = $1 AND status = 'active' AND expires_at <= $2";
    active_holds = "SELECT COUNT(*) FROM creditgate_holds WHERE user_id = $1 AND status = 'active' AND expires_at > $2";
    /// Inserts hold ($3, user $1, key $4, amount $5, model $6, request $7,
    /// expiring at $8) at $2 when the account's [`available`] and the key's
    /// [`key_remaining`] cover it.
    insert_hold_if_available = format!(
        "INSERT INTO creditgate_holds (id, user_id, api_key_id, amount, model, request_id, status, created_at, \
         expires_at, input_rate, output_rate, cached_rate, cache_write_rate, request_fee) \
         SELECT $3::uuid, $1::text, $4::uuid, $5::bigint, $6::text, $7::text, 'active', $2::bigint, \
         $8::bigint, $9::bigint, $10::bigint, $11::bigint, $12::bigint, $13::bigint FROM creditgate_accounts a WHERE a.user_id = $1::text AND {} >= $5::bigint \
         AND NOT EXISTS (SELECT 1 FROM {KEY_FROM} WHERE k.id = $4::uuid AND ({}) < $5::bigint)",
        available("a", "$1::text", "$2::bigint"),
        key_remaining("$2::bigint"),
    );
    hold = format!("SELECT {HOLD_COLS} FROM creditgate_holds WHERE id = $1");
    hold_by_request = format!("SELECT {HOLD_COLS} FROM creditgate_holds WHERE user_id = $1 AND request_id = $2");
    set_hold_status = "UPDATE creditgate_holds SET status = $3, entry_id = COALESCE($4::uuid, entry_id) \
        WHERE id = $1 AND status = $2";

    /// Model $1's price version in effect at $2.
    price = format!(
        "SELECT {PRICE_COLS} FROM creditgate_prices WHERE model = $1 AND effective_at <= $2 \
         ORDER BY effective_at DESC LIMIT 1"
    );
    set_price = "INSERT INTO creditgate_prices (model, effective_at, input_per_1k, output_per_1k, cached_input_per_1k, \
        cache_write_per_1k, request_fee, set_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
        ON CONFLICT (model, effective_at) DO UPDATE SET input_per_1k = EXCLUDED.input_per_1k, \
        output_per_1k = EXCLUDED.output_per_1k, cached_input_per_1k = EXCLUDED.cached_input_per_1k, \
        cache_write_per_1k = EXCLUDED.cache_write_per_1k, request_fee = EXCLUDED.request_fee, set_at = EXCLUDED.set_at";
    /// Every version of model $1 (every model when NULL), oldest first.
    price_history = format!(
        "SELECT model, effective_at, set_at, {PRICE_COLS} FROM creditgate_prices \
         WHERE $1::text IS NULL OR model = $1 ORDER BY model, effective_at"
    );

    price_versions = "SELECT COUNT(*) FROM creditgate_prices WHERE model = $1";
    /// Every usage entry charged at recorded rates, for the audit to
    /// recompute ([`entry_tokens`] order, then [`PRICE_COLS`]).
    priced_usage = format!(
        "SELECT user_id, seq, amount, input_tokens, output_tokens, cached_tokens, cache_write_tokens, \
         input_rate, output_rate, cached_rate, cache_write_rate, request_fee \
         FROM creditgate_entries WHERE kind = 'usage' AND input_rate IS NOT NULL \
         AND ($1::text IS NULL OR user_id = $1)"
    );
    /// Account $1's balance, and the sums of its entries created at or
    /// after $2 and at or after $3 ([`split_sum`]): a statement's opening
    /// and closing balances, from one snapshot.
    statement_edges = format!(
        "SELECT COALESCE((SELECT a.balance FROM creditgate_accounts a WHERE a.user_id = $1), 0), {}, {} \
         FROM creditgate_entries e WHERE e.user_id = $1 AND e.created_at >= $2",
        split_sum("e.amount"),
        split_sum("CASE WHEN e.created_at >= $3 THEN e.amount ELSE 0 END")
    );
    /// Account $1's entries created in [$2, $3), by kind, and for usage by
    /// model and rates.
    statement_lines = format!(
        "SELECT e.kind, CASE WHEN e.kind = 'usage' THEN e.model END AS line_model, \
         e.input_rate, e.output_rate, e.cached_rate, e.cache_write_rate, e.request_fee, {USAGE_SUMS}, {} \
         FROM creditgate_entries e WHERE e.user_id = $1 AND e.created_at >= $2 AND e.created_at < $3 \
         GROUP BY e.kind, line_model, e.input_rate, e.output_rate, e.cached_rate, e.cache_write_rate, e.request_fee \
         LIMIT {}",
        split_sum("e.amount"),
        MAX_SUMMARY_ROWS + 1
    );

    scan_accounts = "SELECT user_id, balance, last_seq FROM creditgate_accounts ORDER BY user_id";
    scan_entries = "SELECT user_id, seq, amount, balance_after FROM creditgate_entries ORDER BY user_id, seq";
    users = "SELECT COUNT(*) FROM (SELECT user_id FROM creditgate_entries UNION SELECT user_id FROM creditgate_api_keys \
        UNION SELECT user_id FROM creditgate_key_attempts) AS u";
    paying_users = "SELECT COUNT(DISTINCT user_id) FROM creditgate_entries WHERE kind = 'purchase'";
    users_attempted_key = "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts";
    paying_users_attempted_key = "SELECT COUNT(DISTINCT user_id) FROM creditgate_key_attempts WHERE user_id IN \
        (SELECT user_id FROM creditgate_entries WHERE kind = 'purchase')";
    key_generation_attempts = "SELECT COALESCE(SUM(attempts), 0)::bigint FROM creditgate_key_attempts";
    key_generation_successes = "SELECT COALESCE(SUM(successes), 0)::bigint FROM creditgate_key_attempts";
    payment_problems = PAYMENT_PROBLEMS;

    /// Sets key $1's rate limits; lifting both keeps the row and its counts
    /// (see [`RATE_ROW_HAS_LIMITS`]).
    set_rate_limit = "INSERT INTO creditgate_key_rate_limits (api_key_id, requests_per_minute, tokens_per_minute) \
        VALUES ($1, $2, $3) ON CONFLICT (api_key_id) DO UPDATE SET \
        requests_per_minute = EXCLUDED.requests_per_minute, tokens_per_minute = EXCLUDED.tokens_per_minute";
    take_requests = TAKE_REQUESTS;
    /// Key $1's requests in the window $2 and its requests-per-minute limit.
    rate_requests = "SELECT CASE WHEN window_start = $2 THEN requests ELSE 0 END, requests_per_minute \
        FROM creditgate_key_rate_limits WHERE api_key_id = $1";
    add_rate_tokens = "UPDATE creditgate_key_rate_limits SET \
        tokens = CASE WHEN window_start = $2 THEN tokens + $3 ELSE $3 END, \
        requests = CASE WHEN window_start = $2 THEN requests ELSE 0 END, window_start = $2 \
        WHERE api_key_id = $1";
    has_rate_limits = format!(
        "SELECT EXISTS (SELECT 1 FROM creditgate_key_rate_limits r WHERE {RATE_ROW_HAS_LIMITS})"
    );

    insert_grant = "INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, \
        expires_at, created_at, payment_id, member_id, api_key_id, allowance_id) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";
    /// User $1's grants with credits left at $2, those past their expiry
    /// only with $3, in [`grant_order`] for member $4 and key $5; each
    /// backend appends its `LIMIT`.
    live_grants = format!(
        "SELECT {GRANT_COLS} FROM creditgate_grants WHERE user_id = $1 AND remaining > 0 \
         AND ($3::boolean OR expires_at IS NULL OR expires_at > $2::bigint) ORDER BY {}",
        grant_order("$2::bigint", "$4::text", "$5::uuid")
    );
    take_from_grant = "UPDATE creditgate_grants SET remaining = remaining - $2::bigint \
        WHERE id = $1 AND remaining >= $2::bigint";
    grant_by_payment = format!("SELECT {GRANT_COLS} FROM creditgate_grants WHERE payment_id = $1 ORDER BY id LIMIT 1");
    due_grants = format!("SELECT {}::bigint", due("$1", "$2::bigint"));
    users_with_due_grants = "SELECT DISTINCT user_id FROM creditgate_grants \
        WHERE remaining > 0 AND expires_at <= $1::bigint ORDER BY user_id LIMIT $2::bigint";

    member_org = "SELECT org_id, joined_at FROM creditgate_members WHERE user_id = $1";
    member_count = "SELECT COUNT(*) FROM creditgate_members WHERE org_id = $1";
    insert_member = "INSERT INTO creditgate_members (user_id, org_id, joined_at) VALUES ($1, $2, $3)";
    delete_member = "DELETE FROM creditgate_members WHERE user_id = $1 AND org_id = $2";
    members = "SELECT user_id, joined_at FROM creditgate_members WHERE org_id = $1 ORDER BY user_id LIMIT $2";
    /// A leaving member's keys leave their projects.
    clear_key_projects = "UPDATE creditgate_api_keys SET project = NULL WHERE user_id = $1 AND project IS NOT NULL";
    set_key_project = "UPDATE creditgate_api_keys SET project = $2 WHERE id = $1";
    insert_project = "INSERT INTO creditgate_projects (org_id, name, created_at) VALUES ($1, $2, $3) \
        ON CONFLICT (org_id, name) DO NOTHING";
    project_count = "SELECT COUNT(*) FROM creditgate_projects WHERE org_id = $1";
    /// Org $1's projects (name $2, or all when NULL) with their key counts.
    projects = format!(
        "SELECT p.name, p.created_at, (SELECT COUNT(*) FROM {KEY_FROM} WHERE k.project = p.name \
         AND {PAYING} = p.org_id) FROM creditgate_projects p WHERE p.org_id = $1 \
         AND ($2::text IS NULL OR p.name = $2::text) ORDER BY p.name"
    );
    /// Org $1's budgets of scope $2 (only name $3 when not NULL), each with
    /// its [`budget_remaining`] at $4.
    budgets = format!(
        "SELECT {BUDGET_COLS}, {} FROM creditgate_budgets b WHERE org_id = $1 AND scope = $2 \
         AND ($3::text IS NULL OR name = $3::text)",
        budget_remaining("b", "CASE WHEN b.scope = 'member' THEN bk.user_id = b.name ELSE bk.project = b.name END", "$4::bigint")
    );
    /// The budgets a charge by member $2 (NULL: none) through a key of
    /// project $3 (NULL: none) counts against, in org $1.
    charge_budgets = format!(
        "SELECT {BUDGET_COLS} FROM creditgate_budgets WHERE org_id = $1 \
         AND ((scope = 'member' AND name = $2::text) OR (scope = 'project' AND name = $3::text)) ORDER BY scope"
    );
    put_budget = "INSERT INTO creditgate_budgets (org_id, scope, name, spend_limit, spend_window, low_threshold, \
        window_start, window_end, spent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
        ON CONFLICT (org_id, scope, name) DO UPDATE SET spend_limit = EXCLUDED.spend_limit, \
        spend_window = EXCLUDED.spend_window, low_threshold = EXCLUDED.low_threshold, \
        window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, spent = EXCLUDED.spent";
    set_budget_spend = "UPDATE creditgate_budgets SET window_start = $4, window_end = $5, spent = $6 \
        WHERE org_id = $1 AND scope = $2 AND name = $3";
    delete_budget = "DELETE FROM creditgate_budgets WHERE org_id = $1 AND scope = $2 AND name = $3";
    /// The usage entries org $1 was charged since $4 by member $3 ($2 =
    /// 'member') or through project $3, as the entries record them (the
    /// store sums them, in i128).
    budget_usage_since = "SELECT e.amount FROM creditgate_entries e WHERE e.user_id = $1 \
        AND e.kind = 'usage' AND e.created_at >= $4 \
        AND CASE WHEN $2::text = 'member' THEN e.member_id = $3 ELSE e.project = $3 END";
    member_entries = format!(
        "SELECT {ENTRY_COLS} FROM creditgate_entries WHERE user_id = $1 AND member_id = $2 AND seq < $3 \
         ORDER BY seq DESC LIMIT $4"
    );
    /// Org $1's usage entries since $2 by its members (the store totals
    /// them per member, in i128).
    member_usage = "SELECT member_id, COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0), amount \
        FROM creditgate_entries WHERE user_id = $1 AND member_id IS NOT NULL AND kind = 'usage' AND created_at >= $2";

    insert_allowance = "INSERT INTO creditgate_allowances (user_id, member_id, api_key_id, amount, period, \
        rollover_cap, next_refill_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    allowance = format!("SELECT {ALLOWANCE_COLS} FROM creditgate_allowances WHERE id = $1 AND removed_at IS NULL");
    allowances = format!(
        "SELECT {ALLOWANCE_COLS} FROM creditgate_allowances WHERE user_id = $1 AND removed_at IS NULL ORDER BY id"
    );
    /// User $1's allowances whose next refill is due at $2.
    due_allowances = format!(
        "SELECT {ALLOWANCE_COLS} FROM creditgate_allowances WHERE user_id = $1 AND removed_at IS NULL \
         AND next_refill_at <= $2 ORDER BY id"
    );
    allowance_count = "SELECT COUNT(*) FROM creditgate_allowances WHERE user_id = $1 AND removed_at IS NULL";
    /// Moves allowance $1's next refill from $2 to $3 (one row: it was $2).
    advance_allowance = "UPDATE creditgate_allowances SET next_refill_at = $3 WHERE id = $1 AND next_refill_at = $2";
    /// Ends, at $4, account $1's allowances for member $2 (or its keys) or
    /// for key $3.
    end_scoped_allowances = format!(
        "UPDATE creditgate_allowances SET removed_at = $4 WHERE user_id = $1 AND removed_at IS NULL AND {}",
        SCOPED_TO
    );
    /// Frees account $1's grants reserved for member $2 (or its keys) or
    /// key $3 for the whole account.
    unscope_grants = format!(
        "UPDATE creditgate_grants SET member_id = NULL, api_key_id = NULL WHERE user_id = $1 AND remaining > 0 AND {}",
        SCOPED_TO
    );
    remove_allowance = "UPDATE creditgate_allowances SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL";
    /// What allowance $1's live grants hold at $2 (summed by the store).
    allowance_live = "SELECT remaining FROM creditgate_grants WHERE allowance_id = $1 \
        AND remaining > 0 AND (expires_at IS NULL OR expires_at > $2)";
    /// The account's `refill_at`: its allowances' earliest next refill.
    sync_refill_at = "UPDATE creditgate_accounts SET refill_at = (SELECT MIN(next_refill_at) \
        FROM creditgate_allowances WHERE user_id = $1 AND removed_at IS NULL) WHERE user_id = $1";
    users_with_due_refills = "SELECT user_id FROM creditgate_accounts WHERE refill_at <= $1::bigint \
        ORDER BY user_id LIMIT $2::bigint";
    /// The report's allowance figures, each a column of amounts the store
    /// sums in i128: expired unused, still held (credits issued come from
    /// the daily totals). Expired: allowance grants, each joined to its
    /// expiry entries through `creditgate_entries_expiries` (013), a
    /// partial index usage never enters.
    allowance_expired = "SELECT -e.amount FROM creditgate_grants g JOIN creditgate_entries e \
        ON e.reference = 'grant:' || g.id AND e.kind = 'expiry' WHERE g.allowance_id IS NOT NULL";
    allowance_held = "SELECT remaining FROM creditgate_grants WHERE allowance_id IS NOT NULL AND remaining > 0";

    // The daily rollup (`store/rollup.rs`).
    /// Days before `through` are in `creditgate_daily_totals`.
    rollup_through = "SELECT through FROM creditgate_rollup WHERE id = 1";
    /// Locks the rollup's state row for the rolling write and reads it (on
    /// PostgreSQL a second roller waits here, then reads the first's
    /// `through`; SQLite's write transaction holds the database already).
    lock_rollup = "UPDATE creditgate_rollup SET through = through WHERE id = 1 RETURNING through";
    /// Moves `through` from $1 to $2 (one row: nobody moved it meanwhile).
    advance_rollup = "UPDATE creditgate_rollup SET through = $2 WHERE id = 1 AND through = $1";
    insert_daily_total = "INSERT INTO creditgate_daily_totals (day, kind, model, currency, entries, amount_hi, \
        amount_lo, minor_hi, minor_lo, input_tokens, output_tokens, cached_tokens, cache_write_tokens) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
    /// The rolled-up rows of days in [$1, $2) before `through` ($3), in
    /// [`day_groups`]' shape (the amounts as [`split_sum`]'s halves, as stored).
    rolled_totals = "SELECT day, kind, model, currency, entries, amount_hi, amount_lo, minor_hi, minor_lo, \
        input_tokens, output_tokens, cached_tokens, cache_write_tokens FROM creditgate_daily_totals \
        WHERE day >= $1 AND day < $2 AND day < $3";
    /// [`day_groups`] of the entries created in [$3, $4) with ids in [$1,
    /// $2): the primary key is a time index (`EntryId::at`), `created_at`
    /// decides.
    day_sums = day_groups(
        "e.id >= $1::uuid AND e.id < $2::uuid AND e.created_at >= $3::bigint AND e.created_at < $4::bigint"
    );
    /// The same by `created_at` alone, a scan of every entry: the first
    /// rollup of a ledger (entries of older versions have ids of the
    /// writer's clock) and the audit's recount.
    day_sums_scan = day_groups("e.created_at >= $1::bigint AND e.created_at < $2::bigint");

    set_topup_rule = "UPDATE creditgate_accounts SET topup_threshold = $2, topup_kind = $3, topup_amount = $4, \
        topup_max_per_month = $5, topup_monthly_cap = $6 WHERE user_id = $1";
    topup_rule = format!("SELECT {TOPUP_RULE_COLS} FROM creditgate_accounts WHERE user_id = $1");
    insert_topup = "INSERT INTO creditgate_topups (id, user_id, amount, status, created_at, updated_at) \
        VALUES ($1, $2, $3, 'requested', $4, $4)";
    topup = format!("SELECT {TOPUP_COLS} FROM creditgate_topups WHERE id = $1");
    topups = format!(
        "SELECT {TOPUP_COLS} FROM creditgate_topups WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    /// User $1's top-ups requested in [$2, $3), oldest first: a month's,
    /// for its caps and `Account::topups_this_month`.
    topups_between = format!(
        "SELECT {TOPUP_COLS} FROM creditgate_topups WHERE user_id = $1 AND created_at >= $2 AND created_at < $3 \
         ORDER BY created_at, id"
    );
    /// Marks top-up $1 paid by entry $2 at $3 (whatever it was: a payment
    /// that arrives after a recorded failure still paid it).
    mark_topup_paid = "UPDATE creditgate_topups SET status = 'paid', entry_id = $2, updated_at = $3 \
        WHERE id = $1 AND status <> 'paid'";
    /// Marks requested top-up $1 failed with reason $2 at $3.
    mark_topup_failed = "UPDATE creditgate_topups SET status = 'failed', reason = $2, updated_at = $3 \
        WHERE id = $1 AND status = 'requested'";

    insert_event = "INSERT INTO creditgate_events (kind, user_id, api_key_id, data, created_at) \
        VALUES ($1, $2, $3, $4, $5) RETURNING id";

    // Webhook subscriptions and their dead letters (`store/webhooks.rs`).
    webhook_insert = "INSERT INTO creditgate_webhooks (id, url, kinds, description, secret, created_at, cursor_id) \
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
    webhook_count = "SELECT COUNT(*) FROM creditgate_webhooks";
    webhook_list = format!("SELECT {WEBHOOK_COLS} FROM creditgate_webhooks w ORDER BY w.created_at, w.id");
    webhook_by_id = format!("SELECT {WEBHOOK_COLS} FROM creditgate_webhooks w WHERE w.id = $1");
    webhook_by_url = format!("SELECT {WEBHOOK_COLS} FROM creditgate_webhooks w WHERE w.url = $1");
    /// The enabled HTTP subscriptions, in the order a pass visits them.
    webhook_deliverable = "SELECT id FROM creditgate_webhooks WHERE enabled AND url NOT LIKE 'callback:%' \
        ORDER BY created_at, id";
    webhook_set_enabled = "UPDATE creditgate_webhooks SET enabled = ($2::bigint <> 0) WHERE id = $1";
    webhook_set_kinds = "UPDATE creditgate_webhooks SET kinds = $2 WHERE id = $1";
    webhook_set_secret = "UPDATE creditgate_webhooks SET secret = $2 WHERE id = $1";
    webhook_delete = "DELETE FROM creditgate_webhooks WHERE id = $1";
    webhook_delete_dead = "DELETE FROM creditgate_webhook_dead_letters WHERE subscription_id = $1";
    /// Leases $1 to $2 until $3 when, at $4, it is enabled, its head is due
    /// (or a dead letter is re-queued) and no other worker's lease is live.
    webhook_claim = "UPDATE creditgate_webhooks SET lease_owner = $2, lease_until = $3 WHERE id = $1 AND enabled \
        AND (next_attempt_at IS NULL OR next_attempt_at <= $4 OR EXISTS (SELECT 1 FROM \
        creditgate_webhook_dead_letters d WHERE d.subscription_id = $1 AND d.requeued)) \
        AND (lease_until IS NULL OR lease_until <= $4 OR lease_owner = $2)";
    /// Moves the cursor to $3 (its head changes: the head's attempts reset),
    /// counts $5 deliveries and renews the lease until $4.
    webhook_advance = "UPDATE creditgate_webhooks SET cursor_id = $3, lease_until = $4, delivered = delivered + $5, \
        attempts = CASE WHEN cursor_id = $3 THEN attempts ELSE 0 END, \
        next_attempt_at = CASE WHEN cursor_id = $3 THEN next_attempt_at ELSE NULL END \
        WHERE id = $1 AND lease_owner = $2";
    /// Records a failed attempt: cursor $3, head attempts $4, retried at
    /// $5, error $6, lease until $7.
    webhook_fail = "UPDATE creditgate_webhooks SET cursor_id = $3, attempts = $4, failed_attempts = failed_attempts + 1, \
        next_attempt_at = $5, last_error = $6, lease_until = $7 WHERE id = $1 AND lease_owner = $2";
    webhook_release = "UPDATE creditgate_webhooks SET lease_owner = NULL, lease_until = NULL \
        WHERE id = $1 AND lease_owner = $2";
    webhook_insert_dead = "INSERT INTO creditgate_webhook_dead_letters (subscription_id, event_id, kind, attempts, \
        last_error, dead_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (subscription_id, event_id) DO UPDATE \
        SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, dead_at = EXCLUDED.dead_at, \
        requeued = FALSE";
    /// Dead letters of subscription $1 (every one when NULL), oldest first.
    webhook_dead_letters = format!(
        "SELECT {DEAD_LETTER_COLS} FROM creditgate_webhook_dead_letters WHERE ($1::text IS NULL OR subscription_id = $1) \
         ORDER BY dead_at, subscription_id, event_id LIMIT $2"
    );
    webhook_requeued = format!(
        "SELECT {DEAD_LETTER_COLS} FROM creditgate_webhook_dead_letters WHERE subscription_id = $1 AND requeued \
         ORDER BY dead_at, event_id LIMIT $2"
    );
    webhook_requeue_one = "UPDATE creditgate_webhook_dead_letters SET requeued = TRUE \
        WHERE subscription_id = $1 AND event_id = $2";
    webhook_requeue_all = "UPDATE creditgate_webhook_dead_letters SET requeued = TRUE WHERE subscription_id = $1";
    webhook_dead_delivered = "DELETE FROM creditgate_webhook_dead_letters WHERE subscription_id = $1 AND event_id = $2";
    webhook_dead_failed = "UPDATE creditgate_webhook_dead_letters SET requeued = FALSE, attempts = attempts + 1, \
        last_error = $3 WHERE subscription_id = $1 AND event_id = $2";
    /// A failed replay of a dead letter, counted on its subscription.
    webhook_replay_failed = "UPDATE creditgate_webhooks SET failed_attempts = failed_attempts + 1, last_error = $3, \
        lease_until = $4 WHERE id = $1 AND lease_owner = $2";
    webhook_event = "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events WHERE id = $1";

    // The operator's reads (`store/browse.rs`).
    /// How many accounts [`ACCOUNT_FILTER`] selects.
    account_count = format!("SELECT COUNT(*) FROM creditgate_accounts WHERE {ACCOUNT_FILTER}");
    accounts_by_user_id = account_page("user_id");
    accounts_by_balance = account_page("balance, user_id");
    accounts_by_balance_desc = account_page("balance DESC, user_id");
    accounts_newest = account_page("created_at DESC, user_id");
    /// User $1's active holds not expired at $2, newest first, at most $3
    /// (`creditgate_holds_active`).
    holds_active_page = format!(
        "SELECT {HOLD_COLS} FROM creditgate_holds WHERE user_id = $1 AND status = 'active' AND expires_at > $2 \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    /// User $1's holds, newest first, at most $2.
    holds_page = format!(
        "SELECT {HOLD_COLS} FROM creditgate_holds WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    /// Active holds not yet expired at $1, ledger-wide (summed by the store):
    /// the report's `outstanding_holds` (index `creditgate_holds_open`).
    holds_outstanding = "SELECT amount FROM creditgate_holds WHERE status = 'active' AND expires_at > $1";
    recent_events = recent_events(false, false);
    recent_events_of_user = recent_events(true, false);
    recent_events_of_kind = recent_events(false, true);
    recent_events_of_user_kind = recent_events(true, true);
}

/// The accounts `list_accounts` selects: user ids containing $1 (when not
/// NULL), balances below $2 (when not NULL).
const ACCOUNT_FILTER: &str =
    "($1::text IS NULL OR STRPOS(user_id, $1::text) > 0) AND ($2::bigint IS NULL OR balance < $2::bigint)";

/// A page of [`ACCOUNT_FILTER`]'s accounts in `order` (columns of the
/// account row; the last one the user id, so pages are stable), $3 of them
/// after skipping $4, each with its holds and active keys at $5: computed
/// for the page's rows only, after the `LIMIT`.
fn account_page(order: &str) -> String {
    format!(
        "SELECT p.user_id, p.balance, p.min_balance, p.created_at, {}::bigint, \
         (SELECT COUNT(*) FROM creditgate_api_keys k WHERE k.user_id = p.user_id AND {}) \
         FROM (SELECT user_id, balance, min_balance, created_at FROM creditgate_accounts WHERE {ACCOUNT_FILTER} \
         ORDER BY {order} LIMIT $3::bigint OFFSET $4::bigint) AS p ORDER BY {order}",
        held("p.user_id", "$5::bigint"),
        key_active("k", "$5::bigint"),
    )
}

/// Events below id $1, of user $2 and/or kind $3 when filtered by them
/// (the placeholders numbered in that order), newest first, at most the
/// last placeholder's; `creditgate_events_user`/`_kind` serve the filters.
fn recent_events(by_user: bool, by_kind: bool) -> String {
    let mut n = 1;
    let mut filter = String::from("id < $1");
    for (on, column) in [(by_user, "user_id"), (by_kind, "kind")] {
        if on {
            n += 1;
            filter += &format!(" AND {column} = ${n}::text");
        }
    }
    format!(
        "SELECT id, kind, user_id, api_key_id, data, created_at FROM creditgate_events WHERE {filter} \
         ORDER BY id DESC LIMIT ${}::bigint",
        n + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_to_sqlite() {
        assert_eq!(
            to_sqlite("SELECT $1::bigint, GREATEST(a, $12::uuid[]), xLEAST(b), ':: $1' FROM t WHERE x = $2::text"),
            "SELECT ?1, MAX(a, ?12), xLEAST(b), ':: $1' FROM t WHERE x = ?2"
        );
        assert_eq!(to_sqlite("SELECT (a + b)::bigint, 'é''$3' || $4"), "SELECT (a + b), 'é''$3' || ?4");
        assert_eq!(
            to_sqlite("WHERE STRPOS(user_id, $1::text) > 0 AND xSTRPOS(a) AND 'STRPOS(b)'"),
            "WHERE INSTR(user_id, ?1) > 0 AND xSTRPOS(a) AND 'STRPOS(b)'"
        );
    }

    /// Every statement of the table prepares on SQLite (the PostgreSQL
    /// texts are prepared by every test run on PostgreSQL).
    #[test]
    fn every_statement_prepares_on_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for m in super::super::schema::MIGRATIONS {
            c.execute_batch(m.sqlite).unwrap();
        }
        let verify = Sql::new(verify("$3"));
        let mut all = S.all();
        all.push(("verify", &verify));
        for (name, sql) in &all {
            c.prepare(sql.sqlite()).unwrap_or_else(|e| panic!("{name}: {e}: {}", sql.sqlite()));
        }
        assert!(all.len() > 50, "{}", all.len());
    }
}
