//! host-local's on-disk store: one file per allocated address, held under an exclusive
//! `flock` on the network's `lock` file so concurrent plugin processes never hand out the
//! same address.
//!
//! Layout (the reference plugin's, so either implementation can read the other's state):
//! `DATA_DIR/NETWORK/IP` contains `CONTAINER_ID\r\nIFNAME`; `last_reserved_ip.N` holds the
//! last address handed out from range set N so allocation moves round-robin through a range.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::CniError;

const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.";

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// CNI_CONTAINERID of the holder.
    pub container_id: String,
    /// CNI_IFNAME of the holder; absent in files written by very old reference plugins.
    pub ifname: Option<String>,
}

impl Owner {
    /// True when this owner is the attachment (`container_id`, `ifname`).
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

/// A network's allocation directory, locked for the lifetime of this value.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating if needed) and locks the store of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| {
                CniError::io(format!("cannot create IPAM directory {}", dir.display()), e)
            })?;
        Self::lock(dir)
    }

    /// Opens and locks an existing store; none when the network never allocated anything.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<Self>, CniError> {
        let dir = data_dir.join(network);
        if !dir.is_dir() {
            return Ok(None);
        }
        Self::lock(dir).map(Some)
    }

    fn lock(dir: PathBuf) -> Result<Self, CniError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CniError::io(format!("cannot open lock file {}", path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            CniError::io(
                format!("cannot lock {}", path.display()),
                std::io::Error::from(errno),
            )
        })?;
        Ok(Self { dir, _lock: lock })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when `ip` is held by someone.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        self.dir.join(ip.to_string()).exists()
    }

    /// Records `ip` for the owner; false when it was already taken.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        set_index: usize,
    ) -> Result<bool, CniError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(CniError::io(format!("cannot reserve {ip}"), e)),
        };
        file.write_all(format!("{container_id}\r\n{ifname}").as_bytes())
            .map_err(|e| CniError::io(format!("cannot record the holder of {ip}"), e))?;
        let last = self.dir.join(format!("{LAST_RESERVED}{set_index}"));
        fs::write(&last, ip.to_string())
            .map_err(|e| CniError::io(format!("cannot write {}", last.display()), e))?;
        Ok(true)
    }

    /// The last address reserved from range set `set_index`, if recorded.
    pub fn last_reserved(&self, set_index: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set_index}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every allocation in the store.
    pub fn allocations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("cannot list {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            // Only files named by an address are allocations (not `lock`, `last_reserved_ip.N`).
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let Ok(content) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = content.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().filter(|l| !l.is_empty()).map(str::to_string);
            out.push((
                ip,
                Owner {
                    container_id,
                    ifname,
                },
            ));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Frees `ip`; succeeds when it was already free.
    pub fn release(&self, ip: IpAddr) -> Result<(), CniError> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("cannot release {ip}"), e)),
        }
    }

    /// Frees every address of the attachment; returns what was freed.
    pub fn release_owner(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let mut freed = Vec::new();
        for (ip, owner) in self.allocations()? {
            if owner.is(container_id, ifname) {
                self.release(ip)?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_release_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "net").unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(store.reserve(ip, "c1", "eth0", 0).unwrap());
        assert!(!store.reserve(ip, "c2", "eth0", 0).unwrap());
        assert!(store.is_reserved(ip));
        assert_eq!(store.last_reserved(0), Some(ip));
        let content = fs::read_to_string(tmp.path().join("net/10.0.0.5")).unwrap();
        assert_eq!(content, "c1\r\neth0");
        let all = store.allocations().unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].1.is("c1", "eth0"));
        assert!(store.release_owner("c1", "eth1").unwrap().is_empty());
        assert_eq!(store.release_owner("c1", "eth0").unwrap(), vec![ip]);
        assert!(!store.is_reserved(ip));
        store.release(ip).unwrap();
    }

    #[test]
    fn open_existing_does_not_create() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Store::open_existing(tmp.path(), "none").unwrap().is_none());
        assert!(!tmp.path().join("none").exists());
    }
}
