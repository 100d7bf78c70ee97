//! Device nodes the container gets and the device-cgroup rules that let it use them.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use capstan_proto::ContainerConfig;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::SpecError;

/// A device node found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Where the node is on the host.
    pub path: PathBuf,
    /// Block or character.
    pub typ: LinuxDeviceType,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits of the node.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Looks device nodes up on the host; the spec generator's only window onto `/dev`.
pub trait HostDevices {
    /// The device at `path`, or every device below it when it is a directory (the CRI lets a
    /// request name a directory such as `/dev/snd`).
    fn devices_at(&self, path: &Path) -> io::Result<Vec<HostDevice>>;
}

/// [`HostDevices`] on this host's filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemDevices;

impl HostDevices for SystemDevices {
    fn devices_at(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
        // Follow a symlink named in the request (/dev/disk/by-id/...), but not the ones met while
        // walking a directory, which would double-count or leave /dev.
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            let mut out = Vec::new();
            walk(path, &mut out)?;
            return Ok(out);
        }
        device_from(path, &meta)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a block or character device",
                )
            })
            .map(|d| vec![d])
    }
}

/// Directories under /dev that hold no real devices or are mounted per container anyway.
const SKIP_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

fn walk(dir: &Path, out: &mut Vec<HostDevice>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        let name = entry.file_name();
        if meta.is_dir() {
            if !SKIP_DIRS.iter().any(|s| name == *s) {
                walk(&path, out)?;
            }
        } else if name != "console" {
            // The console belongs to whoever started the runtime; containers get their own pty.
            out.extend(device_from(&path, &meta));
        }
    }
    Ok(())
}

fn device_from(path: &Path, meta: &std::fs::Metadata) -> Option<HostDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        path: path.to_path_buf(),
        typ,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Device nodes plus cgroup rules.
pub(super) struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub cgroup_rules: Vec<LinuxDeviceCgroup>,
}

/// Deny everything, then allow each requested device with its permissions (libcontainer adds
/// the standard /dev/null, /dev/zero, ptys and friends itself). Privileged containers get every
/// host device and an allow-all rule.
pub(super) fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host: &dyn HostDevices,
) -> Result<Devices, SpecError> {
    let mut devices: Vec<LinuxDevice> = Vec::new();
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")?];

    if privileged {
        let all = host
            .devices_at(Path::new("/dev"))
            .map_err(|source| SpecError::Device {
                field: "linux.security_context.privileged".into(),
                path: "/dev".into(),
                source,
            })?;
        for d in all {
            let path = d.path.clone();
            push(&mut devices, node(&d, path)?);
        }
        rules = vec![rule(true, LinuxDeviceType::A, None, None, "rwm")?];
    }

    for (i, req) in config.devices.iter().enumerate() {
        if req.host_path.is_empty() {
            return Err(SpecError::invalid(
                format!("devices[{i}].host_path"),
                "is empty",
            ));
        }
        let container_path = if req.container_path.is_empty() {
            &req.host_path
        } else {
            &req.container_path
        };
        if !container_path.starts_with("/dev/") {
            return Err(SpecError::invalid(
                format!("devices[{i}].container_path"),
                format!("{container_path:?} is not below /dev"),
            ));
        }
        let perms = if req.permissions.is_empty() {
            "rwm"
        } else {
            req.permissions.as_str()
        };
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::invalid(
                format!("devices[{i}].permissions"),
                format!("{perms:?} is not made of r, w and m"),
            ));
        }
        let host_root = Path::new(&req.host_path);
        let found = host
            .devices_at(host_root)
            .map_err(|source| SpecError::Device {
                field: format!("devices[{i}].host_path"),
                path: host_root.to_path_buf(),
                source,
            })?;
        for d in found {
            // A directory maps below the container path, keeping the layout under it.
            let suffix = d.path.strip_prefix(host_root).unwrap_or(Path::new(""));
            let target = if suffix.as_os_str().is_empty() {
                PathBuf::from(container_path)
            } else {
                Path::new(container_path).join(suffix)
            };
            push(&mut devices, node(&d, target)?);
            if !privileged {
                rules.push(rule(true, d.typ, Some(d.major), Some(d.minor), perms)?);
            }
        }
    }
    Ok(Devices {
        devices,
        cgroup_rules: rules,
    })
}

/// libcontainer creates nodes one by one, so a second node at the same path would fail; the
/// request's own devices come last and win over the privileged host list.
fn push(devices: &mut Vec<LinuxDevice>, dev: LinuxDevice) {
    devices.retain(|d| d.path() != dev.path());
    devices.push(dev);
}

fn node(d: &HostDevice, path: PathBuf) -> Result<LinuxDevice, SpecError> {
    Ok(LinuxDeviceBuilder::default()
        .path(path)
        .typ(d.typ)
        .major(d.major)
        .minor(d.minor)
        .file_mode(d.file_mode)
        .uid(d.uid)
        .gid(d.gid)
        .build()?)
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access.to_string());
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use capstan_proto::Device;

    /// A fake /dev: a null, a fuse, and a directory with two sound devices.
    pub struct FakeDevices;

    fn dev(path: &str, typ: LinuxDeviceType, major: i64, minor: i64) -> HostDevice {
        HostDevice {
            path: path.into(),
            typ,
            major,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    impl HostDevices for FakeDevices {
        fn devices_at(&self, path: &Path) -> io::Result<Vec<HostDevice>> {
            let all = vec![
                dev("/dev/fuse", LinuxDeviceType::C, 10, 229),
                dev("/dev/sda", LinuxDeviceType::B, 8, 0),
                dev("/dev/snd/pcm0", LinuxDeviceType::C, 116, 2),
                dev("/dev/snd/pcm1", LinuxDeviceType::C, 116, 3),
            ];
            let found: Vec<_> = all
                .into_iter()
                .filter(|d| d.path.starts_with(path))
                .collect();
            if found.is_empty() {
                Err(io::Error::from(io::ErrorKind::NotFound))
            } else {
                Ok(found)
            }
        }
    }

    fn cfg(devices: &[(&str, &str, &str)]) -> ContainerConfig {
        ContainerConfig {
            devices: devices
                .iter()
                .map(|(c, h, p)| Device {
                    container_path: c.to_string(),
                    host_path: h.to_string(),
                    permissions: p.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn requested_device_gets_node_and_rule() {
        let d = devices(
            &cfg(&[("/dev/myfuse", "/dev/fuse", "rw")]),
            false,
            &FakeDevices,
        )
        .unwrap();
        assert_eq!(d.devices.len(), 1);
        assert_eq!(d.devices[0].path(), Path::new("/dev/myfuse"));
        assert_eq!((d.devices[0].major(), d.devices[0].minor()), (10, 229));
        assert!(!d.cgroup_rules[0].allow(), "first rule denies all");
        let r = &d.cgroup_rules[1];
        assert!(r.allow());
        assert_eq!((r.major(), r.minor()), (Some(10), Some(229)));
        assert_eq!(r.access().as_deref(), Some("rw"));
    }

    #[test]
    fn directory_maps_below_container_path() {
        let d = devices(&cfg(&[("/dev/sound", "/dev/snd", "")]), false, &FakeDevices).unwrap();
        let paths: Vec<_> = d.devices.iter().map(|d| d.path().clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/dev/sound/pcm0"),
                PathBuf::from("/dev/sound/pcm1")
            ]
        );
        assert_eq!(d.cgroup_rules[2].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn privileged_gets_all_devices_and_allow_all() {
        let d = devices(&cfg(&[("/dev/f", "/dev/fuse", "r")]), true, &FakeDevices).unwrap();
        assert_eq!(d.devices.len(), 5);
        assert_eq!(d.cgroup_rules.len(), 1);
        assert!(d.cgroup_rules[0].allow());
        assert_eq!(d.cgroup_rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(d.cgroup_rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn bad_device_requests_are_named() {
        let err = devices(&cfg(&[("", "/dev/nope", "")]), false, &FakeDevices)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("devices[0].host_path: host device /dev/nope")
        );
        assert!(err.is_invalid_argument());
        let err = devices(&cfg(&[("/tmp/x", "/dev/fuse", "")]), false, &FakeDevices)
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("devices[0].container_path: "),
            "{err}"
        );
        let err = devices(&cfg(&[("", "/dev/fuse", "rx")]), false, &FakeDevices)
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("devices[0].permissions: "),
            "{err}"
        );
    }
}
