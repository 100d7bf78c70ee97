//! Capstan's CNI library and bundled plugins (bridge, host-local, loopback, vxlan).

/// The plugins this crate ships, in the order `capstan cni --help` lists them.
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "vxlan"];
