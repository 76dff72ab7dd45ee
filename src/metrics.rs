//! Process counters and latency histograms (SPEC §6): relaxed atomics, so
//! the hot path pays a few uncontended adds.

use crate::error::ErrorCode;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
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
        }
    };
}

counters!(
    key_eligibility_checks_total,
    key_generation_attempts_total,
    key_generation_success_total,
    key_generation_denied_total,
    verify_ok_total,
    verify_invalid_key_total,
    verify_insufficient_credits_total,
    usage_charges_total,
    tokens_metered_total,
    credits_charged_micros_total,
    usage_overdrafts_total,
    purchases_total,
    credits_purchased_micros_total,
    holds_total,
    holds_settled_total,
    holds_released_total,
    holds_expired_total,
);

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_MICROS: [u64; 12] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];

#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_MICROS.iter().position(|&b| micros <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6; // exposition format only, never money
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
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
                "# HELP creditgate_{name} creditgate process counter {name}\n# TYPE creditgate_{name} counter\ncreditgate_{name} {}",
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
}
