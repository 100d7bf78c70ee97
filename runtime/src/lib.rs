//! Capstan's CRI runtime: images, pod sandboxes, containers, logs, streaming and stats, served
//! over CRI v1 and callable in-process by the agent.

pub use capstan_cgroups as cgroups;
pub mod commands;
pub mod config;
pub mod images;
pub mod monitor;
pub mod network;
pub mod pods;
pub mod server;
pub mod service;
pub mod spec;
pub mod streaming;

/// Where the runtime keeps state that must survive its own restart.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/capstan";

/// The CRI socket the runtime listens on unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/capstan/capstan.sock";
