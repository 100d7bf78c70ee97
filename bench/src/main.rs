//! `capstan-bench`: Capstan's CRI runtime side by side with Debian's containerd 1.6 + runc, both
//! started here with private directories, sockets and cgroups below this process's cgroup, and
//! driven through the same Rust CRI client. Prints one Markdown table (Capstan, peer, ratio) and
//! writes it with the raw numbers as JSON. Not a test: run it as root on an idle machine, from a
//! release build (`hack/bench` does both).

mod measure;
mod oci;
mod peers;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::registry::LocalRegistry;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::peers::{CapstanDaemon, Network, Peer};

/// Which CNI plugins both runtimes' pods use.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Plugins {
    /// Capstan's bridge, host-local and loopback (the capstan binary under each name).
    Capstan,
    /// Debian's reference plugins in /usr/lib/cni.
    Reference,
}

#[derive(Debug, Parser)]
#[command(about = "Pod start/stop latency and memory: Capstan against containerd + runc")]
struct Args {
    /// Pods per phase (sequential, then concurrent).
    #[arg(long, default_value_t = 20)]
    pods: usize,
    /// The capstan binary (default: `capstan` next to this executable).
    #[arg(long)]
    capstan: Option<PathBuf>,
    /// CNI plugins for both runtimes' pods.
    #[arg(long, value_enum, default_value_t = Plugins::Capstan)]
    plugins: Plugins,
    /// The `cni_bench` example (capstan-cni) to run for the CNI ADD/DEL rows; skipped if unset.
    #[arg(long)]
    cni_bench: Option<PathBuf>,
    /// Network namespaces per side for the CNI rows.
    #[arg(long, default_value_t = 100)]
    cni_pods: usize,
    /// `--log-level` of the Capstan daemon (its log is `runtime.log` in the work directory);
    /// `capstan_runtime=debug,warn` logs the time of every pod start step.
    #[arg(long, default_value = "warn")]
    capstan_log_level: String,
    /// Keep the work directory (logs, state) instead of removing it at the end.
    #[arg(long)]
    keep_work: bool,
    /// OCI create + start + delete cycles per runtime (libcontainer, runc, crun); 0 skips them.
    #[arg(long, default_value_t = 100)]
    oci_iterations: usize,
    /// Where bench.json and bench.md are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    internal: Option<Internal>,
}

/// Helpers the harness runs as child processes of its own.
#[derive(Debug, Subcommand)]
enum Internal {
    /// Times one OCI runtime command line's create, start and delete cycles (one JSON line).
    #[command(hide = true)]
    OciWorker {
        /// `runc` or `crun`.
        #[arg(long)]
        runtime: String,
        /// The runtime's state directory.
        #[arg(long)]
        root: PathBuf,
        /// The OCI bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// Cycles.
        #[arg(long)]
        iterations: usize,
    },
}

/// The reference plugins' directory.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "capstan_bench=info".into()),
        )
        .init();
    let mut args = Args::parse();
    // The worker runs before any async runtime exists: it unshares its mount namespace, which a
    // multi-threaded process cannot.
    let outcome = match args.internal.take() {
        Some(Internal::OciWorker {
            runtime,
            root,
            bundle,
            iterations,
        }) => oci::worker(&runtime, &root, &bundle, iterations),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("async runtime: {e}"))
            .and_then(|runtime| runtime.block_on(run(args))),
    };
    if let Err(e) = outcome {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the runtimes create namespaces, mounts and cgroups".into());
    }
    let capstan = match args.capstan.clone() {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("capstan"),
    };
    if !capstan.is_file() {
        return Err(format!(
            "{} is missing: cargo build --release first",
            capstan.display()
        ));
    }
    let registry = LocalRegistry::start().map_err(|e| e.to_string())?;
    let images = catalog().map_err(|e| e.to_string())?;
    // The container is the sandbox image too: it sleeps until SIGTERM, so every pod runs a
    // process and stops promptly on either runtime.
    registry
        .client()
        .push_image("pause", "1", &images.pause, ManifestFormat::Oci)
        .map_err(|e| e.to_string())?;
    let image = format!("{}/pause:1", registry.host());
    let work = tempfile::Builder::new()
        // Short: Capstan's per-pod monitor socket lives under its run dir, and unix socket
        // paths are limited to 108 bytes.
        .prefix("cb-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let plugin_dir = plugin_dir(args.plugins, &capstan, work.path())?;

    let mut sides = Vec::new();
    for (label, subnet) in [
        ("capstan", "10.201.0.0/16"),
        ("containerd", "10.202.0.0/16"),
    ] {
        let dir = work.path().join(&label[..3]);
        let bridge = capstan_testkit::names::unique(&format!("cb{}", &label[..3]), 15);
        let network = Network::write(&dir, &plugin_dir, &bridge, subnet)
            .map_err(|e| format!("write the CNI config: {e}"))?;
        tracing::info!(peer = label, "starting");
        let peer = match label {
            "capstan" => Peer::Capstan(
                CapstanDaemon::start(
                    &capstan,
                    &dir.join("r"),
                    &network,
                    &registry.host(),
                    &args.capstan_log_level,
                )
                .await?,
            ),
            _ => Peer::containerd(&dir.join("r"), &network, &registry.host(), &image).await?,
        };
        let results = measure::run(&peer, label, &image, args.pods, &dir.join("logs")).await;
        // The peer and its pods go before the next one starts, so neither competes.
        drop(peer);
        drop(network);
        sides.push(results.map_err(|e| format!("{label}: {e}"))?);
    }

    let cni = match &args.cni_bench {
        Some(binary) => Some(cni_rows(binary, args.cni_pods)?),
        None => None,
    };
    let oci = if args.oci_iterations > 0 {
        let capstan = capstan.clone();
        let dir = work.path().join("oci");
        let iterations = args.oci_iterations;
        let (ours, runc, crun) =
            tokio::task::spawn_blocking(move || oci::run(&capstan, &dir, iterations))
                .await
                .map_err(|e| format!("OCI task: {e}"))??;
        Some(json!({
            "iterations": iterations,
            "capstan_libcontainer": ours.to_json(),
            "runc": runc.to_json(),
            "crun": crun.to_json(),
        }))
    } else {
        None
    };
    let json = json!({
        "pods": args.pods,
        "plugins": format!("{:?}", args.plugins).to_lowercase(),
        "capstan": sides[0].to_json(args.pods),
        "containerd_runc": sides[1].to_json(args.pods),
        "cni": cni.as_ref().map(|c| json!({"ours": c.0, "reference": c.1})),
        "oci": oci,
    });
    let markdown = report::markdown(&json);
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let pretty = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("bench.json"), pretty).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("bench.md"), &markdown).map_err(|e| e.to_string())?;
    println!("{markdown}");
    if args.keep_work {
        let kept = work.keep();
        tracing::info!(dir = %kept.display(), "work directory kept");
    }
    Ok(())
}

/// The plugin directory both runtimes use.
fn plugin_dir(plugins: Plugins, capstan: &Path, work: &Path) -> Result<PathBuf, String> {
    match plugins {
        Plugins::Reference => Ok(PathBuf::from(REFERENCE_PLUGINS)),
        Plugins::Capstan => {
            let dir = work.join("cni-bin");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            // A relative target would dangle from the plugin directory.
            let capstan = std::fs::canonicalize(capstan)
                .map_err(|e| format!("--capstan {}: {e}", capstan.display()))?;
            for name in ["bridge", "host-local", "loopback"] {
                std::os::unix::fs::symlink(&capstan, dir.join(name)).map_err(|e| e.to_string())?;
            }
            Ok(dir)
        }
    }
}

/// Runs the CNI ADD/DEL benchmark and reads its two rows: (ours, reference), each
/// `[ADD p50, ADD p90, DEL p50, DEL p90]` in ms.
fn cni_rows(binary: &Path, pods: usize) -> Result<([f64; 4], [f64; 4]), String> {
    tracing::info!(pods, "CNI ADD/DEL");
    let out = Command::new(binary)
        .arg(pods.to_string())
        .output()
        .map_err(|e| format!("run {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} failed: {text}{}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let row = |label: &str| -> Result<[f64; 4], String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label))
            .ok_or_else(|| format!("no {label} row in:\n{text}"))?;
        let values: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.trim_end_matches("ms").parse().ok())
            .collect();
        values
            .try_into()
            .map_err(|_| format!("cannot read the {label} row: {line}"))
    };
    Ok((row("capstan")?, row("reference")?))
}
