//! Host-wide claims on test subnets. Tests running side by side (nextest runs each in its own
//! process) put bridges, gateways and service addresses in the host's network namespace; two
//! holding the same /24 route each other's traffic, so a test reaches the other test's pod.
//! A claim is an exclusive `flock` on a file named after the subnet: the kernel drops it when
//! the holder exits, even by a crash, so no claim outlives its test.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

/// Where the claim files live; shared by every test process on the host.
const CLAIMS_DIR: &str = "/tmp/capstan-test-subnets";

/// Octets a claim picks from: 20..=219, as the tests' subnets always used.
const FIRST: u16 = 20;
const COUNT: u16 = 200;

/// One claimed third octet in a pool (e.g. `10.199`), held until this value is dropped.
#[derive(Debug)]
pub struct SubnetClaim {
    octet: u8,
    _lock: Flock<File>,
}

impl SubnetClaim {
    /// Claims a free third octet in `pool` (the first two octets, e.g. `"10.199"`), starting
    /// at a spread-out place so concurrent tests rarely contend for the same file.
    ///
    /// # Panics
    /// When the claims directory cannot be written or all 200 octets are held, which only a
    /// broken host or a runaway test suite would cause.
    pub fn new(pool: &str) -> Self {
        let dir = PathBuf::from(CLAIMS_DIR);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let start = crate::names::unique("", 12).bytes().fold(0u16, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u16::from(b))
        });
        for step in 0..COUNT {
            let octet = FIRST + (start.wrapping_add(step)) % COUNT;
            let path = dir.join(format!("{pool}.{octet}"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return SubnetClaim {
                    octet: octet as u8,
                    _lock: lock,
                };
            }
        }
        panic!("every test subnet in {pool}.0.0/16 is claimed by another test");
    }

    /// The claimed third octet.
    pub fn octet(&self) -> u8 {
        self.octet
    }
}

#[cfg(test)]
mod tests {
    use super::SubnetClaim;

    #[test]
    fn a_held_octet_is_not_handed_out_again_until_released() {
        let pool = format!("test-{}", std::process::id());
        let first = SubnetClaim::new(&pool);
        let held: Vec<SubnetClaim> = (0..20).map(|_| SubnetClaim::new(&pool)).collect();
        assert!(
            held.iter().all(|c| c.octet() != first.octet()),
            "octet {} handed out twice",
            first.octet()
        );
        let mut octets: Vec<u8> = held.iter().map(SubnetClaim::octet).collect();
        octets.sort_unstable();
        octets.dedup();
        assert_eq!(octets.len(), held.len(), "duplicate claims: {octets:?}");
        let octet = first.octet();
        drop(first);
        drop(held);
        // Once released, every octet is free again: 200 claims succeed, the released one among them.
        let all: Vec<SubnetClaim> = (0..200).map(|_| SubnetClaim::new(&pool)).collect();
        assert!(all.iter().any(|c| c.octet() == octet));
        drop(all);
        for entry in std::fs::read_dir(super::CLAIMS_DIR).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&pool) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
