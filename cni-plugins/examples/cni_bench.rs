//! ADD and DEL latency of Capstan's bridge + host-local against the reference plugins
//! (Debian's containernetworking-plugins) over fresh network namespaces, interleaved so both
//! see the same machine load. Not a test: it prints p50, p90 and the ratio ours/reference.
//!
//! Run as root, release build:
//! `cargo run --release -p capstan-cni --example cni_bench -- [PODS] [REFERENCE_DIR]`
//! (defaults: 100 pods, /usr/lib/cni). Our plugins are taken from the same target directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use capstan_testkit::netns::NetNs;

struct Side {
    label: &'static str,
    bin_dir: PathBuf,
    host: NetNs,
    conf: String,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn invoke(side: &Side, command: &str, id: &str, netns: &Path) -> Result<Duration, String> {
    let mut cmd = side.host.command(side.bin_dir.join("bridge"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &side.bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(side.conf.as_bytes())
            .map_err(|e| format!("stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {command} failed: {}",
            side.label,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(took)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let pods: usize = args
        .next()
        .map(|a| a.parse().map_err(|_| format!("PODS {a:?} is not a number")))
        .transpose()?
        .unwrap_or(100);
    let reference_dir = PathBuf::from(args.next().unwrap_or_else(|| "/usr/lib/cni".into()));
    if !reference_dir.join("bridge").is_file() {
        return Err(format!(
            "no reference bridge in {}: apt-get install containernetworking-plugins",
            reference_dir.display()
        ));
    }
    // target/<profile>/examples/cni_bench -> target/<profile>/
    let ours_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or("cannot find the target directory")?;
    if !ours_dir.join("bridge").is_file() || !ours_dir.join("host-local").is_file() {
        return Err(format!(
            "our plugins are not built in {}: run `cargo build --release -p capstan-cni` first",
            ours_dir.display()
        ));
    }
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = |bridge: &str, subnet: &str, dir: &str| {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": bridge,
            "isDefaultGateway": true,
            "ipam": {"type": "host-local", "dataDir": data.path().join(dir), "ranges": [[{"subnet": subnet}]]}
        })
        .to_string()
    };
    let new_ns = |p: &str| NetNs::new(p).map_err(|e| e.to_string());
    let mut sides = [
        Side {
            label: "capstan",
            bin_dir: ours_dir,
            host: new_ns("bench-h1")?,
            conf: conf("bbr1", "10.123.0.0/16", "ours"),
            add: Vec::new(),
            del: Vec::new(),
        },
        Side {
            label: "reference",
            bin_dir: reference_dir,
            host: new_ns("bench-h2")?,
            conf: conf("bbr2", "10.124.0.0/16", "reference"),
            add: Vec::new(),
            del: Vec::new(),
        },
    ];
    // One warm-up pair each creates the bridges, so every measured ADD does the same work.
    for side in &sides {
        let ns = new_ns("bench-w")?;
        invoke(side, "ADD", "warm", ns.path())?;
        invoke(side, "DEL", "warm", ns.path())?;
    }
    let mut pods_ns: Vec<[NetNs; 2]> = Vec::new();
    for i in 0..pods {
        let pair = [new_ns("bench-p")?, new_ns("bench-p")?];
        // Alternate who goes first so neither side always runs on a warmer cache.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            let took = invoke(&sides[s], "ADD", &format!("pod-{i}"), pair[s].path())?;
            sides[s].add.push(took);
        }
        pods_ns.push(pair);
    }
    for (i, pair) in pods_ns.iter().enumerate() {
        let order = if i % 2 == 0 { [1, 0] } else { [0, 1] };
        for s in order {
            let took = invoke(&sides[s], "DEL", &format!("pod-{i}"), pair[s].path())?;
            sides[s].del.push(took);
        }
    }
    println!("{pods} fresh namespaces per side, bridge + host-local, cniVersion 1.0.0");
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}",
        "", "ADD p50", "ADD p90", "DEL p50", "DEL p90"
    );
    for side in &sides {
        println!(
            "{:<10} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            side.label,
            ms(percentile(&side.add, 0.5)),
            ms(percentile(&side.add, 0.9)),
            ms(percentile(&side.del, 0.5)),
            ms(percentile(&side.del, 0.9)),
        );
    }
    let ratio = |f: fn(&Side) -> &Vec<Duration>, p| {
        ms(percentile(f(&sides[0]), p)) / ms(percentile(f(&sides[1]), p)).max(f64::EPSILON)
    };
    println!(
        "{:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        "ratio",
        ratio(|s| &s.add, 0.5),
        ratio(|s| &s.add, 0.9),
        ratio(|s| &s.del, 0.5),
        ratio(|s| &s.del, 0.9),
    );
    Ok(())
}
