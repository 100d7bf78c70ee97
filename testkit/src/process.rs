//! Small measurements and resources for benchmarks that run a server process: its resident
//! memory, and a free loopback port to start it on.

/// The resident set size of process `pid` in MiB (`VmRSS` of `/proc/<pid>/status`); 0 when
/// it cannot be read (the process is gone).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A free loopback TCP port (bound and released again: another process may take it first, a
/// race benchmarks accept).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_and_a_port() {
        assert!(rss_mib(std::process::id()) > 0.0);
        assert!(free_port().is_ok_and(|port| port > 0));
    }
}
