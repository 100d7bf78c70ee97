//! IP address management plugins.

pub mod host_local;
