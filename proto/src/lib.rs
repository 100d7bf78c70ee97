//! CRI v1 (`runtime.v1`) protocol definitions shared by the runtime's gRPC server, the agent's
//! remote-runtime client and the tests.
//!
//! The messages and tonic services come from the maintained `k8s-cri` crate (generated from the
//! upstream api.proto at build time with Debian's `protoc`); this crate pins one place that every
//! Capstan crate imports them from.

pub use k8s_cri::v1::*;

/// The CRI API version Capstan serves and expects from remote runtimes.
pub const CRI_API_VERSION: &str = "v1";
