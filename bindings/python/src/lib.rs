//! Python bindings for creditgate.
