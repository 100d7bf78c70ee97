//! Interface counters of a pod's network namespace, read from `/proc/<pid>/net/dev` of a process
//! inside it, for the stats and the metrics RPCs alike.

use super::record::SandboxRecord;

/// The cumulative counters of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name, as inside the pod (`eth0`).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// The pod's interfaces, read from the monitor's view of its network namespace; none for
/// host-network pods (their counters are the node's) or a gone monitor.
pub fn read(sandbox: &SandboxRecord) -> Option<Vec<InterfaceCounters>> {
    if !sandbox.own_network || sandbox.monitor_pid == 0 {
        return None;
    }
    let path = format!("/proc/{}/net/dev", sandbox.monitor_pid);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(parse(&text)),
        Err(e) => {
            tracing::debug!(id = %sandbox.id, path, error = %e, "no network counters for the pod");
            None
        }
    }
}

/// Parses /proc/net/dev: per interface, receive bytes/packets/errors are columns 1 to 3,
/// transmit bytes/packets/errors columns 9 to 11; loopback is left out, as the kubelet does.
pub fn parse(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let numbers: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (name != "lo" && numbers.len() >= 16).then(|| InterfaceCounters {
                name: name.to_string(),
                rx_bytes: numbers[0],
                rx_packets: numbers[1],
                rx_errors: numbers[2],
                tx_bytes: numbers[8],
                tx_packets: numbers[9],
                tx_errors: numbers[10],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn net_dev_counters_are_read_per_interface_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        let parsed = parse(text);
        assert_eq!(parsed.len(), 1);
        let eth0 = &parsed[0];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors),
            (5000, 40, 2)
        );
        assert_eq!(
            (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors),
            (7000, 50, 3)
        );
    }

    #[test]
    fn a_line_with_a_garbled_counter_is_skipped() {
        let text = "h1\nh2\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n  eth1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        let parsed = parse(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].name, "eth1");
        assert_eq!(parsed[0].tx_packets, 10);
    }
}
