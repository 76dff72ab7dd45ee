//! `LocalCreditManager` methods of operators: audit, business report and
//! process metrics.

use super::LocalCreditManager;
use crate::types::{AuditReport, MetricsSnapshot, Report};
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[pymethods]
impl LocalCreditManager {
    fn audit(&self, py: Python<'_>) -> PyResult<AuditReport> {
        self.counted(py, || {
            let report = self.run(py, |m| m.audit())?;
            AuditReport::new(py, report)
        })
    }

    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.counted(py, || {
            let counters = self.run(py, |m| Ok(m.metrics()))?;
            let out = PyDict::new(py);
            for (name, value) in counters {
                out.set_item(name, value)?;
            }
            Ok(out)
        })
    }

    /// What `metrics_prometheus()` writes, as numbers: no text to parse.
    fn metrics_snapshot(&self, py: Python<'_>) -> PyResult<MetricsSnapshot> {
        self.counted(py, || {
            let snapshot = self.run(py, |m| Ok(m.metrics_snapshot()))?;
            MetricsSnapshot::new(py, snapshot)
        })
    }

    fn metrics_prometheus(&self, py: Python<'_>) -> PyResult<String> {
        self.counted(py, || self.run(py, |m| Ok(m.metrics_prometheus())))
    }

    fn report(&self, py: Python<'_>) -> PyResult<Report> {
        self.counted(py, || {
            let report = self.run(py, |m| m.report())?;
            Report::new(py, report)
        })
    }
}
