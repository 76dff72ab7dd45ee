//! The schema's migrations, one table for both backends, and the one rule
//! of which to apply ([`pending`]). Each store runs them in its own way
//! (SQLite under its write lock, PostgreSQL under an advisory lock) through
//! [`run`], recording each in `creditgate_schema_version`.

use crate::error::{Error, Result};

/// One schema version: its SQL for each backend.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("migrations/postgres/", $name, ".sql")),
        }
    };
}

/// Every migration, by version, with no gaps.
pub(crate) const MIGRATIONS: &[Migration] = &[
    migration!(1, "001_init"),
    migration!(2, "002_lean_entry_indexes"),
    migration!(3, "003_min_balance"),
    migration!(4, "004_events"),
    migration!(5, "005_key_lifecycle"),
    migration!(6, "006_grants"),
    migration!(7, "007_rate_limits"),
    migration!(8, "008_organisations"),
    migration!(9, "009_pricing"),
    migration!(10, "010_webhooks"),
    migration!(11, "011_topups"),
    migration!(12, "012_operator_reads"),
    migration!(13, "013_daily_totals"),
];

/// The newest schema version this library knows.
pub(crate) const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The refusal of every write by a library older than the ledger's schema:
/// its statements were written for the schema it knows, and writing with
/// them could corrupt what a newer version keeps (docs/upgrading.md).
pub(crate) fn newer_schema(found: i64, known: i64) -> Error {
    Error::Storage(format!(
        "database schema is version {found}, this creditgate ({}) knows up to {known}: upgrade creditgate \
         (writes are refused, reads still work; see docs/upgrading.md)",
        env!("CARGO_PKG_VERSION")
    ))
}

/// The migrations to apply, in order, on a schema whose recorded versions
/// are `applied`: every known one not recorded (not only those above the
/// highest recorded one, so a gap is filled). A recorded version this
/// library does not know is refused: newer than [`LATEST_VERSION`] with
/// [`newer_schema`], any other as a damaged record.
pub(crate) fn pending(applied: &[i64]) -> Result<Vec<&'static Migration>> {
    if let Some(&newest) = applied.iter().max()
        && newest > LATEST_VERSION
    {
        return Err(newer_schema(newest, LATEST_VERSION));
    }
    if let Some(v) = applied.iter().find(|v| !MIGRATIONS.iter().any(|m| m.version == **v)) {
        return Err(Error::Storage(format!("schema version {v} is recorded but no creditgate version has it")));
    }
    Ok(MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)).collect())
}

/// Applies the migrations [`pending`] on `applied`, up to version `up_to`,
/// each with `apply` (which runs its SQL and records it). Returns the schema
/// version before and after (0 before: no schema). A schema newer than this
/// library is left alone and returned as it is: the caller refuses writes.
pub(crate) fn run(applied: &[i64], up_to: i64, mut apply: impl FnMut(&Migration) -> Result<()>) -> Result<(i64, i64)> {
    let current = applied.iter().copied().max().unwrap_or(0);
    if current > LATEST_VERSION {
        return Ok((current, current));
    }
    let mut after = current;
    for m in pending(applied)?.into_iter().filter(|m| m.version <= up_to) {
        apply(m).map_err(|e| match e {
            Error::Storage(msg) => Error::Storage(format!("{msg} (migration {})", m.name)),
            other => other,
        })?;
        after = after.max(m.version);
    }
    Ok((current, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(ms: Vec<&Migration>) -> Vec<i64> {
        ms.iter().map(|m| m.version).collect()
    }

    #[test]
    fn the_table_has_every_version_once_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(m.name.starts_with(&format!("{:03}_", m.version)), "{}", m.name);
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn pending_is_every_unrecorded_version_in_order() {
        assert_eq!(versions(pending(&[]).unwrap()), (1..=LATEST_VERSION).collect::<Vec<_>>());
        assert_eq!(versions(pending(&[1, 2, 3]).unwrap()), (4..=LATEST_VERSION).collect::<Vec<_>>());
        // A gap is filled, not skipped.
        assert_eq!(versions(pending(&[1, 3]).unwrap())[0], 2);
        let all: Vec<i64> = (1..=LATEST_VERSION).collect();
        assert!(pending(&all).unwrap().is_empty());
    }

    #[test]
    fn pending_refuses_newer_and_unknown_versions() {
        let Err(e) = pending(&[1, LATEST_VERSION + 1]) else { panic!("a newer schema was not refused") };
        assert!(e.to_string().contains(&format!("version {}", LATEST_VERSION + 1)), "{e}");
        assert!(e.to_string().contains("upgrade creditgate"), "{e}");
        let Err(e) = pending(&[0, 1]) else { panic!("an unknown version was not refused") };
        assert!(e.to_string().contains("schema version 0 is recorded"), "{e}");
    }

    #[test]
    fn run_applies_up_to_and_leaves_a_newer_schema_alone() {
        let mut seen = Vec::new();
        let record = |m: &Migration| {
            seen.push(m.version);
            Ok(())
        };
        assert_eq!(run(&[1], 4, record).unwrap(), (1, 4));
        assert_eq!(seen, [2, 3, 4]);
        let newer = [1, LATEST_VERSION + 2];
        assert_eq!(run(&newer, i64::MAX, |_| panic!("applied")).unwrap(), (LATEST_VERSION + 2, LATEST_VERSION + 2));
        let e = run(&[], i64::MAX, |m| if m.version == 2 { Err(Error::Storage("boom".into())) } else { Ok(()) });
        assert!(e.is_err());
    }
}
