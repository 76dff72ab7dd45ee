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

    fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative = cumulative.saturating_add(self.buckets[i].load(Ordering::Relaxed));
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = cumulative.saturating_add(self.buckets[BUCKETS_MICROS.len()].load(Ordering::Relaxed));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6; // exposition only, never money
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
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

    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        for &c in Counter::ALL {
            let name = c.name();
            let _ = writeln!(
                out,
                "# HELP creditgate_{name} {}\n# TYPE creditgate_{name} counter\ncreditgate_{name} {}",
                c.help(),
                self.counters[c as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP creditgate_errors_total Failed operations by error code\n# TYPE creditgate_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "creditgate_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                self.errors[code.index()].load(Ordering::Relaxed)
            );
        }
        self.verify_seconds.write_prometheus(&mut out, "creditgate_verify_seconds", "Latency of API key verification");
        self.charge_seconds.write_prometheus(
            &mut out,
            "creditgate_charge_seconds",
            "Latency of usage charges and deducts",
        );
        out
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
        h.write_prometheus(&mut out, "x_seconds", "help");
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
            h.write_prometheus(&mut out, "x", "help");
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
        h.write_prometheus(&mut out, "x", "help");
        assert!(out.contains("x_count 80000\n"), "{out}");
    }
}
