//! Process counters and latency histograms (docs/reference.md): relaxed atomics, so
//! the hot path pays a few uncontended adds.

use crate::error::ErrorCode;
use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

thread_local! {
    /// Whether this thread counted an error since its front door's call
    /// began ([`begin_call`]). A front door (the Python or C binding) counts
    /// the errors it raised itself, e.g. a bad argument caught while
    /// converting, and only those: the core's are counted where they arise.
    static ERROR_COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Starts one front-door call on this thread (see `ERROR_COUNTED`).
pub(crate) fn begin_call() {
    let _ = ERROR_COUNTED.try_with(|c| c.set(false));
}

macro_rules! counters {
    ($($name:ident => $help:literal),* $(,)?) => {
        /// One process counter.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($name),* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$name),*];
            pub fn name(self) -> &'static str {
                match self { $(Counter::$name => stringify!($name)),* }
            }
            /// The name in the Prometheus exposition: `creditgate_` + [`Counter::name`].
            pub fn prometheus_name(self) -> &'static str {
                match self { $(Counter::$name => concat!("creditgate_", stringify!($name))),* }
            }
            /// The `# HELP` text of the Prometheus exposition.
            pub fn help(self) -> &'static str {
                match self { $(Counter::$name => $help),* }
            }
        }
    };
}

counters!(
    key_eligibility_checks_total => "Key eligibility checks (can_generate_api_key) answered",
    key_generation_attempts_total => "API key creations attempted, allowed or not",
    key_generation_success_total => "API keys created",
    key_generation_denied_total => "API key creations denied for insufficient credits or the active-key limit",
    verify_ok_total => "API key verifications that passed",
    verify_invalid_key_total => "API key verifications denied: unknown, malformed or revoked key",
    verify_insufficient_credits_total => "API key verifications denied: available credits below the minimum",
    usage_charges_total => "Usage charges recorded (record_usage and settle), replays not counted",
    tokens_metered_total => "Tokens (input plus output) of the usage charges",
    credits_charged_micros_total => "Micro-credits charged for usage",
    usage_overdrafts_total => "Usage charges that left the balance negative",
    purchases_total => "Purchase entries recorded, replays not counted",
    credits_purchased_micros_total => "Micro-credits bought by purchases",
    holds_total => "Holds (reservations) placed",
    holds_settled_total => "Holds settled",
    holds_released_total => "Holds released",
    holds_expired_total => "Holds this process observed expired",
);

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_MICROS: [u64; 12] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

/// The same bounds as `le` label values, in seconds, written as the Python
/// and Go clients write them (`5e-05`, `1.0`), so the text of `prometheus()`,
/// of `creditgate.prometheus` and of a multiprocess scrape agree label for
/// label and PromQL can sum them.
const BUCKET_LABELS: [&str; 12] =
    ["5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "1.0"];

/// Observations per bucket (not cumulative); the last slot counts those above
/// the largest bound. The count is the sum of the slots, so one exposition
/// always has `+Inf` == `_count` and monotonic buckets, also while other
/// threads observe.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_MICROS.iter().position(|&b| micros <= b).unwrap_or(BUCKETS_MICROS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative bucket counts and the sum, read once: the count is the
    /// `+Inf` bucket, so buckets are monotonic and `+Inf` == `_count`.
    fn sample(&self, name: &'static str, help: &'static str) -> HistogramSample {
        let mut buckets = Vec::with_capacity(BUCKET_LABELS.len() + 1);
        let mut cumulative = 0u64;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative = cumulative.saturating_add(self.buckets[i].load(Ordering::Relaxed));
            buckets.push((*le, cumulative));
        }
        let count = cumulative.saturating_add(self.buckets[BUCKETS_MICROS.len()].load(Ordering::Relaxed));
        buckets.push(("+Inf", count));
        HistogramSample { name, help, buckets, sum_micros: self.sum_micros.load(Ordering::Relaxed) }
    }
}

/// One process counter's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSample {
    /// The exposition name (`creditgate_verify_ok_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// One latency histogram's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSample {
    /// The exposition name (`creditgate_verify_seconds`).
    pub name: &'static str,
    pub help: &'static str,
    /// (`le` label in seconds, cumulative count), in order, ending with
    /// (`"+Inf"`, the count of observations).
    pub buckets: Vec<(&'static str, u64)>,
    pub sum_micros: u64,
}

impl HistogramSample {
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }

    fn write_prometheus(&self, out: &mut String) {
        let (name, help) = (self.name, self.help);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (le, cumulative) in &self.buckets {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros as f64 / 1e6; // exposition only, never money
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", self.count());
    }
}

/// The name and `# HELP` text of the error counter, labelled by `code`.
pub const ERRORS_NAME: &str = "creditgate_errors_total";
pub const ERRORS_HELP: &str = "Failed operations by error code";

/// A process's metrics at one moment, structured (`CreditManager::metrics_snapshot`):
/// what `metrics_prometheus()` writes as text, for front doors that build
/// their own metrics from it (Python's `creditgate.prometheus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Every counter, in `Counter::ALL` order.
    pub counters: Vec<CounterSample>,
    /// `creditgate_errors_total` by code, every code in `ErrorCode::ALL` order.
    pub errors: Vec<(ErrorCode, u64)>,
    /// `creditgate_verify_seconds`, then `creditgate_charge_seconds`.
    pub histograms: Vec<HistogramSample>,
}

impl MetricsSnapshot {
    /// The Prometheus text exposition (format 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        for c in &self.counters {
            let _ = writeln!(out, "# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}", c.name, c.help, c.value);
        }
        let _ = writeln!(out, "# HELP {ERRORS_NAME} {ERRORS_HELP}\n# TYPE {ERRORS_NAME} counter");
        for (code, value) in &self.errors {
            let _ = writeln!(out, "{ERRORS_NAME}{{code=\"{}\"}} {value}", code.as_str());
        }
        for h in &self.histograms {
            h.write_prometheus(&mut out);
        }
        out
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    counters: [AtomicU64; 17],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    pub(crate) verify_seconds: Histogram,
    pub(crate) charge_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Ordering::Relaxed);
        let _ = ERROR_COUNTED.try_with(|c| c.set(true));
    }

    /// Counts an error a front door returns unless the core already counted
    /// it during this call.
    pub(crate) fn error_once(&self, code: ErrorCode) {
        if !ERROR_COUNTED.try_with(|c| c.replace(false)).unwrap_or(false) {
            self.error(code);
        }
    }

    /// name → value; `errors_total` is the sum over codes.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<_> =
            Counter::ALL.iter().map(|&c| (c.name(), self.counters[c as usize].load(Ordering::Relaxed))).collect();
        let errors = self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum();
        out.push(("errors_total", errors));
        out
    }

    pub(crate) fn full_snapshot(&self) -> MetricsSnapshot {
        let counters = Counter::ALL
            .iter()
            .map(|&c| CounterSample {
                name: c.prometheus_name(),
                help: c.help(),
                value: self.counters[c as usize].load(Ordering::Relaxed),
            })
            .collect();
        let errors =
            ErrorCode::ALL.iter().map(|&code| (code, self.errors[code.index()].load(Ordering::Relaxed))).collect();
        let histograms = vec![
            self.verify_seconds.sample("creditgate_verify_seconds", "Latency of API key verification"),
            self.charge_seconds.sample("creditgate_charge_seconds", "Latency of usage charges and deducts"),
        ];
        MetricsSnapshot { counters, errors, histograms }
    }

    pub(crate) fn prometheus(&self) -> String {
        self.full_snapshot().prometheus()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_exposition() {
        assert_eq!(Counter::ALL.len(), 17);
        let m = Metrics::default();
        m.inc(Counter::verify_ok_total);
        m.add(Counter::tokens_metered_total, 1500);
        m.error(ErrorCode::Storage);
        m.verify_seconds.observe(Duration::from_micros(70));
        let snap: std::collections::HashMap<_, _> = m.snapshot().into_iter().collect();
        assert_eq!(snap["verify_ok_total"], 1);
        assert_eq!(snap["tokens_metered_total"], 1500);
        assert_eq!(snap["errors_total"], 1);
        let text = m.prometheus();
        assert!(text.contains("creditgate_errors_total{code=\"storage\"} 1"));
        assert!(text.contains("creditgate_verify_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("creditgate_verify_seconds_count 1"));
    }

    /// The structured snapshot holds what the text shows: every counter by
    /// its exposition name, every error code, both histograms.
    #[test]
    fn snapshot_matches_the_pairs_and_the_text() {
        let m = Metrics::default();
        m.add(Counter::tokens_metered_total, 7);
        m.error(ErrorCode::RateLimited);
        m.error(ErrorCode::RateLimited);
        m.charge_seconds.observe(Duration::from_micros(300));
        let snap = m.full_snapshot();
        let pairs = m.snapshot();
        assert_eq!(snap.counters.len() + 1, pairs.len());
        for (c, (name, value)) in snap.counters.iter().zip(&pairs) {
            assert_eq!(c.name, format!("creditgate_{name}"));
            assert_eq!(c.value, *value);
        }
        assert_eq!(snap.errors.len(), ErrorCode::ALL.len());
        assert_eq!(snap.errors.iter().map(|e| e.1).sum::<u64>(), 2);
        assert!(snap.errors.contains(&(ErrorCode::RateLimited, 2)));
        let charge = &snap.histograms[1];
        assert_eq!((charge.name, charge.count(), charge.sum_micros), ("creditgate_charge_seconds", 1, 300));
        assert_eq!(charge.buckets[3], ("0.0005", 1));
        assert_eq!(charge.buckets[2], ("0.00025", 0));
        assert_eq!(snap.prometheus(), m.prometheus());
        assert!(m.prometheus().contains("creditgate_charge_seconds_sum 0.0003\n"));
    }

    #[test]
    fn bucket_labels_are_the_bounds_in_seconds() {
        for (label, micros) in BUCKET_LABELS.iter().zip(BUCKETS_MICROS) {
            assert_eq!(label.parse::<f64>().unwrap(), micros as f64 / 1e6, "{label}");
        }
    }

    #[test]
    fn slow_observations_count_only_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(3));
        let mut out = String::new();
        h.sample("x_seconds", "help").write_prometheus(&mut out);
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1.0\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\nx_seconds_sum 3.001\nx_seconds_count 2\n"), "{out}");
    }

    /// Every family has one HELP and one TYPE line before its samples, and
    /// every name is a valid metric name with the `creditgate_` prefix.
    #[test]
    fn exposition_shape() {
        let text = Metrics::default().prometheus();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty() && !help.contains('\\'), "{line}");
                families.push(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(Some(name), families.last().map(String::as_str), "{line}");
                assert!(matches!(kind, "counter" | "histogram"), "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = families.last().unwrap();
                assert!(name == family || name.strip_prefix(family.as_str()).is_some_and(|s| s.starts_with('_')));
            }
        }
        let mut unique = families.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), families.len());
        assert_eq!(families.len(), Counter::ALL.len() + 3);
        for name in &families {
            assert!(name.starts_with("creditgate_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        }
    }

    /// Scrapes taken while other threads observe are each consistent.
    #[test]
    fn concurrent_scrapes_are_consistent() {
        let h = std::sync::Arc::new(Histogram::default());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        h.observe(Duration::from_micros((i * 37 + t) % 2_000_000));
                    }
                })
            })
            .collect();
        let mut last_count = 0;
        for _ in 0..200 {
            let mut out = String::new();
            h.sample("x", "help").write_prometheus(&mut out);
            let values: Vec<u64> = out
                .lines()
                .filter(|l| l.starts_with("x_bucket") || l.starts_with("x_count"))
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect();
            assert!(values.windows(2).take(BUCKETS_MICROS.len()).all(|w| w[0] <= w[1]), "{out}");
            let (inf, count) = (values[BUCKETS_MICROS.len()], values[BUCKETS_MICROS.len() + 1]);
            assert_eq!(inf, count, "{out}");
            assert!(count >= last_count);
            last_count = count;
        }
        for w in writers {
            w.join().unwrap();
        }
        let mut out = String::new();
        h.sample("x", "help").write_prometheus(&mut out);
        assert!(out.contains("x_count 80000\n"), "{out}");
    }
}
