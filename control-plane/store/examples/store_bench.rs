//! Create latency and throughput of the embedded store, sequential and with concurrent
//! writers, and the process's memory: `cargo run --release -p capstan-store --example
//! store_bench -- [WRITES] [CONCURRENCY] [VALUE_BYTES]` (defaults 2000, 10, 1024). Measures the
//! disk the temp directory is on (`TMPDIR`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_store::Store;
use capstan_store::sqlite::SqliteStore;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn run(store: Arc<SqliteStore>, label: &str, writes: usize, writers: usize, value: usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let count = writes / writers;
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for n in 0..count {
                let key = format!("/bench/{label}/{writer}/{n}");
                let t = Instant::now();
                store.create(&key, vec![7; value]).await.expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{label}: {} creates by {writers} writer(s): p50 {:?}, p99 {:?}, {:.0} creates/s",
        latencies.len(),
        pick(0.50),
        pick(0.99),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let writes = arg(1, 2000);
    let concurrency = arg(2, 10);
    let value = arg(3, 1024);
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(SqliteStore::open_in(dir.path()).expect("open the store"));
    run(store.clone(), "sequential", writes, 1, value).await;
    run(store.clone(), "concurrent", writes, concurrency, value).await;
    println!(
        "RSS {} KiB now, {} KiB at most; file {} KiB",
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:"),
        std::fs::metadata(dir.path().join(SqliteStore::FILE_NAME))
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );
}
