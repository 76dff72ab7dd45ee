//! Python bindings for creditgate: the native module `creditgate._creditgate`,
//! re-exported by the `creditgate` package (docs/reference.md).
//!
//! A thin layer, one file per concept: `manager.rs` and `manager/` (the
//! `LocalCreditManager` facade, its methods grouped by concept), `types.rs`
//! (frozen result objects), `errors.rs` (the exception classes of
//! docs/reference.md), `limits.rs` (the core's limits and defaults as module
//! constants), `webhooks.rs` (`verify_webhook`, for receivers) and `convert.rs` (value conversion). The core crate knows
//! nothing of Python.

// The Python signatures are fixed by docs/reference.md: one Rust parameter per keyword.
#![allow(clippy::too_many_arguments)]

mod convert;
mod errors;
mod limits;
mod manager;
mod types;
mod webhooks;

use pyo3::prelude::*;

#[pymodule]
fn _creditgate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<manager::LocalCreditManager>()?;
    types::register(m)?;
    errors::register(m)?;
    limits::register(m)?;
    webhooks::register(m)?;
    Ok(())
}
