//! Mount propagation of a container's bind mounts, checked against the host's mounts as
//! containerd checks it: PROPAGATION_BIDIRECTIONAL needs a source on a shared mount,
//! PROPAGATION_HOST_TO_CONTAINER one on a shared or slave mount, or the kernel has nothing to
//! propagate. It also says which mounts the pod monitor must set the propagation of once
//! libcontainer has made them, since libcontainer 0.7 leaves a bind mount with its source's.

use std::path::{Path, PathBuf};

use capstan_proto::{ContainerConfig, MountPropagation};

use super::error::{PodError, Result};

/// One line of /proc/self/mountinfo, the fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    /// In a peer group (`shared:N`).
    shared: bool,
    /// Receives from a master (`master:N`).
    slave: bool,
}

fn parse(mountinfo: &str) -> Vec<MountEntry> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, _) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split_whitespace().collect();
            let mount_point = PathBuf::from(super::mountinfo::unescape(fields.get(4)?));
            let optional = fields.get(6..).unwrap_or(&[]);
            Some(MountEntry {
                mount_point,
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                slave: optional.iter().any(|f| f.starts_with("master:")),
            })
        })
        .collect()
}

/// The mount `path` lives on: the last-mounted one with the longest mount point above it.
fn mount_of<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(index, m)| (m.mount_point.components().count(), *index))
        .map(|(_, m)| m)
}

/// Checks the request's propagation against the host's mounts and returns, per mount that
/// needs it, the container path and the propagation (`rprivate` or `rslave`) the monitor must
/// set inside the container. A private mount whose source tree is private throughout is left
/// alone: libcontainer's copy is private already.
pub fn check(config: &ContainerConfig) -> Result<Vec<(PathBuf, String)>> {
    if config.mounts.is_empty() {
        return Ok(Vec::new());
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| PodError::Internal(format!("read /proc/self/mountinfo: {e}")))?;
    check_with(config, &parse(&table))
}

fn check_with(config: &ContainerConfig, mounts: &[MountEntry]) -> Result<Vec<(PathBuf, String)>> {
    let mut fixes = Vec::new();
    for (index, m) in config.mounts.iter().enumerate() {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) || !m.host_path.starts_with('/') {
            continue;
        }
        let field = format!("config.mounts[{index}].propagation");
        // Symlinks resolved, as the bind mount will resolve them.
        let source = std::fs::canonicalize(&m.host_path).map_err(|e| {
            PodError::Invalid(format!(
                "config.mounts[{index}].host_path: {:?}: {e}",
                m.host_path
            ))
        })?;
        let Some(host) = mount_of(mounts, &source) else {
            return Err(PodError::Internal(format!(
                "{field}: no mount holds {} in /proc/self/mountinfo",
                source.display()
            )));
        };
        let not = |what: &str| {
            PodError::FailedPrecondition(format!(
                "{field}: {:?} is mounted on {}, which is not a {what} mount (make it one, \
                 e.g. mount --make-rshared {})",
                m.host_path,
                host.mount_point.display(),
                host.mount_point.display()
            ))
        };
        match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationBidirectional) => {
                if !host.shared {
                    return Err(not("shared"));
                }
            }
            Ok(MountPropagation::PropagationHostToContainer) => {
                if !host.shared && !host.slave {
                    return Err(not("shared or slave"));
                }
                fixes.push((PathBuf::from(&m.container_path), "rslave".to_string()));
            }
            Ok(MountPropagation::PropagationPrivate) => {
                let propagating = mounts
                    .iter()
                    .filter(|e| e.mount_point.starts_with(&source) || e == &host)
                    .any(|e| e.shared || e.slave);
                if propagating {
                    fixes.push((PathBuf::from(&m.container_path), "rprivate".to_string()));
                }
            }
            // The spec names an unknown value.
            Err(_) => {}
        }
    }
    Ok(fixes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::Mount;

    const TABLE: &str = "\
1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw
2 1 0:40 / /tmp rw,relatime - tmpfs tmpfs rw
3 2 0:41 / /tmp/shared rw shared:7 - tmpfs tmpfs rw
4 2 0:42 / /tmp/slave rw master:7 - tmpfs tmpfs rw
5 2 0:40 /private /tmp/private\\040dir rw - tmpfs tmpfs rw
6 5 0:43 / /tmp/private\\040dir/inner rw shared:9 - tmpfs tmpfs rw
";

    fn config(host: &str, p: MountPropagation) -> ContainerConfig {
        ContainerConfig {
            mounts: vec![Mount {
                host_path: host.into(),
                container_path: "/data".into(),
                propagation: p as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn mountinfo_lines_and_the_mount_a_path_is_on() {
        let mounts = parse(TABLE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[4].mount_point, Path::new("/tmp/private dir"));
        assert!(mounts[2].shared && !mounts[2].slave && mounts[3].slave);
        let on = |p: &str| mount_of(&mounts, Path::new(p)).map(|m| m.mount_point.clone());
        assert_eq!(on("/tmp/shared/x"), Some("/tmp/shared".into()));
        assert_eq!(on("/tmp/sharedx"), Some("/tmp".into()));
        assert_eq!(on("/etc"), Some("/".into()));
    }

    /// `check_with` against the table, for host paths that exist here: "/" stands in for a
    /// path on a private mount, the others are looked up by mount point only.
    #[test]
    fn containerd_rules_and_the_fixes_they_leave() {
        use MountPropagation::*;
        let private_root = vec![MountEntry {
            mount_point: "/".into(),
            shared: false,
            slave: false,
        }];
        let shared_root = vec![MountEntry {
            mount_point: "/".into(),
            shared: true,
            slave: false,
        }];
        let slave_root = vec![MountEntry {
            mount_point: "/".into(),
            shared: false,
            slave: true,
        }];
        let run = |p, mounts: &[MountEntry]| check_with(&config("/", p), mounts);

        let err = run(PropagationBidirectional, &private_root).unwrap_err();
        assert!(matches!(err, PodError::FailedPrecondition(_)));
        assert!(
            err.to_string().starts_with(
                "config.mounts[0].propagation: \"/\" is mounted on /, which is not a shared mount"
            ),
            "{err}"
        );
        let err = run(PropagationBidirectional, &slave_root).unwrap_err();
        assert!(err.to_string().contains("not a shared mount"), "{err}");
        assert_eq!(run(PropagationBidirectional, &shared_root).unwrap(), vec![]);

        let err = run(PropagationHostToContainer, &private_root).unwrap_err();
        assert!(
            err.to_string().contains("not a shared or slave mount"),
            "{err}"
        );
        let fix = vec![(PathBuf::from("/data"), "rslave".to_string())];
        assert_eq!(run(PropagationHostToContainer, &slave_root).unwrap(), fix);
        assert_eq!(run(PropagationHostToContainer, &shared_root).unwrap(), fix);

        assert_eq!(run(PropagationPrivate, &private_root).unwrap(), vec![]);
        assert_eq!(
            run(PropagationPrivate, &shared_root).unwrap(),
            vec![(PathBuf::from("/data"), "rprivate".to_string())]
        );
    }
}
