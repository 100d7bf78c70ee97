//! Capstan's CNI library and bundled plugins (bridge, host-local, loopback, vxlan).
//!
//! The library speaks CNI spec 1.0.0 and 1.1.0 (and reads 0.3.x/0.4.0 configs): [`config`]
//! types, [`result`]s, [`error`]s with the spec's codes, and the entry point in [`skel`].
//! Each plugin is its own executable (`src/bin/`) and also `capstan cni NAME`.

#![warn(missing_docs)]

pub mod config;
pub mod delegate;
pub mod error;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod peers;
pub mod plugins;
pub mod result;
pub mod skel;
pub mod version;

use std::process::ExitCode;

/// The plugins this crate ships, in the order `capstan cni --help` lists them.
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "vxlan"];

/// The plugin a program is, judging by the name it was started as (`/opt/cni/bin/bridge`
/// hard-linked to the `capstan` binary is the bridge plugin).
pub fn plugin_for_program(argv0: &std::ffi::OsStr) -> Option<&'static str> {
    let name = std::path::Path::new(argv0).file_name()?.to_str()?;
    PLUGINS.iter().copied().find(|p| *p == name)
}

/// Runs plugin `name` as a CNI executable (environment, stdin, stdout) and returns the
/// process exit status. An unknown name prints the spec's error JSON and fails.
pub fn run_plugin(name: &str) -> ExitCode {
    match name {
        "bridge" => skel::run(&plugins::bridge::Bridge),
        "host-local" => skel::run(&ipam::host_local::HostLocal),
        "loopback" => skel::run(&plugins::loopback::Loopback),
        "vxlan" => skel::run(&plugins::vxlan::Vxlan),
        other => {
            let err = error::CniError::config(format!(
                "unknown plugin {other:?}; this binary provides {}",
                PLUGINS.join(", ")
            ));
            println!("{}", err.to_json(version::LATEST));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn program_names_pick_plugins() {
        assert_eq!(
            plugin_for_program(OsStr::new("/opt/cni/bin/host-local")),
            Some("host-local")
        );
        assert_eq!(plugin_for_program(OsStr::new("vxlan")), Some("vxlan"));
        assert_eq!(plugin_for_program(OsStr::new("/usr/bin/capstan")), None);
    }
}
