//! The interface plugins: each attaches a container to a network its own way.

pub mod attach;
pub mod bridge;
pub mod loopback;
pub mod vxlan;
