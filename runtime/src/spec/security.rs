//! Capabilities and the /proc and /sys paths a container must not see or write.

use capstan_proto::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::SpecError;

const FIELD: &str = "linux.security_context.capabilities";

/// The capability set containerd (and Docker) give an unprivileged container.
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows; "ALL" and privileged containers mean this list.
const ALL_CAPS: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// The capabilities set in a kernel capability mask, such as /proc/self/status `CapEff`
/// (bit N is capability number N; numbers the list does not know are ignored).
pub fn capabilities_from_mask(mask: u64) -> Capabilities {
    // Kernel numbering, from include/uapi/linux/capability.h.
    const BY_NUMBER: [Capability; 41] = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::DacReadSearch,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setpcap,
        Capability::LinuxImmutable,
        Capability::NetBindService,
        Capability::NetBroadcast,
        Capability::NetAdmin,
        Capability::NetRaw,
        Capability::IpcLock,
        Capability::IpcOwner,
        Capability::SysModule,
        Capability::SysRawio,
        Capability::SysChroot,
        Capability::SysPtrace,
        Capability::SysPacct,
        Capability::SysAdmin,
        Capability::SysBoot,
        Capability::SysNice,
        Capability::SysResource,
        Capability::SysTime,
        Capability::SysTtyConfig,
        Capability::Mknod,
        Capability::Lease,
        Capability::AuditWrite,
        Capability::AuditControl,
        Capability::Setfcap,
        Capability::MacOverride,
        Capability::MacAdmin,
        Capability::Syslog,
        Capability::WakeAlarm,
        Capability::BlockSuspend,
        Capability::AuditRead,
        Capability::Perfmon,
        Capability::Bpf,
        Capability::CheckpointRestore,
    ];
    BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// containerd's default masked paths: kernel interfaces that leak host data or allow attacks.
const DEFAULT_MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths: host-wide knobs that /proc exposes writable.
const DEFAULT_READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capability sets: privileged gets everything; otherwise the default set with the
/// request's drops then adds applied ("ALL" works in both). "Everything" is what the runtime
/// itself holds (`available`, `None` for every capability), as containerd grants its own set:
/// a process can never give its container a capability it lacks, and libcontainer would fail
/// the start with a bare EPERM. A capability the request names explicitly that the runtime
/// lacks is refused, naming it. Inheritable stays empty, as in containerd since
/// CVE-2022-24769, so exec'd binaries cannot pick capabilities up through file capabilities;
/// ambient holds only what the request asks for explicitly.
pub(super) fn capabilities(
    sc: &LinuxContainerSecurityContext,
    available: Option<&Capabilities>,
) -> Result<LinuxCapabilities, SpecError> {
    let held = |c: &Capability| available.is_none_or(|a| a.contains(c));
    let all: Capabilities = ALL_CAPS.iter().copied().filter(held).collect();
    let (set, ambient) = if sc.privileged {
        (all, Capabilities::new())
    } else {
        let req = sc.capabilities.clone().unwrap_or_default();
        let add = parse_list(&req.add_capabilities, "add_capabilities", &all, available)?;
        let drop = parse_list(&req.drop_capabilities, "drop_capabilities", &all, None)?;
        let ambient = parse_list(
            &req.add_ambient_capabilities,
            "add_ambient_capabilities",
            &all,
            available,
        )?;
        // Drops first so that `drop: [ALL], add: [NET_BIND_SERVICE]` keeps the one it adds.
        let mut set: Capabilities = DEFAULT_CAPS.iter().copied().filter(held).collect();
        set.retain(|c| !drop.contains(c));
        set.extend(add);
        // An ambient capability must also be permitted and inheritable or the kernel drops it.
        set.extend(ambient.iter().copied());
        (set, ambient)
    };
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()?)
}

/// The capabilities `names` lists: "ALL" is `all`; a named one must be in `available` when
/// that is given (adds), any known one otherwise (drops).
fn parse_list(
    names: &[String],
    list: &str,
    all: &Capabilities,
    available: Option<&Capabilities>,
) -> Result<Capabilities, SpecError> {
    let mut out = Capabilities::new();
    for (i, name) in names.iter().enumerate() {
        if name.eq_ignore_ascii_case("ALL") {
            out.extend(all.iter().copied());
            continue;
        }
        // oci-spec's parser is the one that accepts both CAP_X and X, in any case.
        let cap: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| {
                SpecError::invalid(
                    format!("{FIELD}.{list}[{i}]"),
                    format!("unknown capability {name:?}"),
                )
            })?;
        if available.is_some_and(|a| !a.contains(&cap)) {
            return Err(SpecError::invalid(
                format!("{FIELD}.{list}[{i}]"),
                format!("{name:?}: the runtime itself does not hold this capability"),
            ));
        }
        out.insert(cap);
    }
    Ok(out)
}

/// Empty for privileged containers; otherwise the request's list, or containerd's defaults when
/// the list is empty (proto3 cannot tell an empty list from an unset one, so containerd falls
/// back to the defaults there too).
pub(super) fn masked_paths(sc: &LinuxContainerSecurityContext) -> Vec<String> {
    paths(sc, &sc.masked_paths, &DEFAULT_MASKED)
}

/// Same rules as [`masked_paths`].
pub(super) fn readonly_paths(sc: &LinuxContainerSecurityContext) -> Vec<String> {
    paths(sc, &sc.readonly_paths, &DEFAULT_READONLY)
}

fn paths(
    sc: &LinuxContainerSecurityContext,
    requested: &[String],
    default: &[&str],
) -> Vec<String> {
    if sc.privileged {
        Vec::new()
    } else if requested.is_empty() {
        default.iter().map(|p| p.to_string()).collect()
    } else {
        requested.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::Capability as CriCaps;

    fn sc(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn effective(c: &LinuxCapabilities) -> Capabilities {
        c.effective().clone().unwrap_or_default()
    }

    #[test]
    fn default_set() {
        let c = capabilities(&Default::default(), None).unwrap();
        let e = effective(&c);
        assert_eq!(e.len(), 14);
        assert!(e.contains(&Capability::NetBindService));
        assert!(!e.contains(&Capability::SysAdmin));
        assert!(!e.contains(&Capability::NetAdmin));
        assert_eq!(c.bounding(), c.effective());
        assert_eq!(c.permitted(), c.effective());
        assert_eq!(c.inheritable().as_ref().map(|s| s.len()), Some(0));
    }

    #[test]
    fn add_and_drop_accept_both_spellings() {
        let c = capabilities(
            &sc(&["NET_ADMIN", "CAP_SYS_TIME"], &["cap_kill", "MKNOD"]),
            None,
        )
        .unwrap();
        let e = effective(&c);
        assert!(e.contains(&Capability::NetAdmin));
        assert!(e.contains(&Capability::SysTime));
        assert!(!e.contains(&Capability::Kill));
        assert!(!e.contains(&Capability::Mknod));
        assert_eq!(e.len(), 14);
    }

    #[test]
    fn drop_all_then_add_one() {
        let e = effective(&capabilities(&sc(&["NET_BIND_SERVICE"], &["ALL"]), None).unwrap());
        assert_eq!(e, [Capability::NetBindService].into_iter().collect());
    }

    #[test]
    fn add_all() {
        let e = effective(&capabilities(&sc(&["all"], &[]), None).unwrap());
        assert_eq!(e.len(), ALL_CAPS.len());
    }

    #[test]
    fn unknown_capability_is_named() {
        let err = capabilities(&sc(&["CHOWN", "FLY"], &[]), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.security_context.capabilities.add_capabilities[1]: unknown capability \"FLY\""
        );
    }

    #[test]
    fn ambient_caps_are_also_permitted_and_inheritable() {
        let mut s = sc(&[], &["ALL"]);
        if let Some(c) = s.capabilities.as_mut() {
            c.add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        }
        let c = capabilities(&s, None).unwrap();
        let one: Capabilities = [Capability::NetBindService].into_iter().collect();
        assert_eq!(c.ambient().clone().unwrap_or_default(), one);
        assert_eq!(c.inheritable().clone().unwrap_or_default(), one);
        assert_eq!(effective(&c), one);
    }

    #[test]
    fn privileged_gets_every_capability_and_ignores_drops() {
        let mut s = sc(&[], &["ALL"]);
        s.privileged = true;
        let c = capabilities(&s, None).unwrap();
        assert_eq!(effective(&c).len(), ALL_CAPS.len());
        assert_eq!(c.bounding().as_ref().map(|b| b.len()), Some(ALL_CAPS.len()));
    }

    #[test]
    fn capability_masks() {
        assert_eq!(capabilities_from_mask(0x01ff_ffff_ffff).len(), 41);
        let without_sys_resource = capabilities_from_mask(0x01ff_feff_ffff);
        assert_eq!(without_sys_resource.len(), 40);
        assert!(!without_sys_resource.contains(&Capability::SysResource));
        assert_eq!(
            capabilities_from_mask(1 << 21),
            [Capability::SysAdmin].into_iter().collect()
        );
    }

    #[test]
    fn all_and_privileged_mean_what_the_runtime_holds() {
        // A runtime started without CAP_SYS_RESOURCE, as on hosts that withhold it.
        let held: Capabilities = ALL_CAPS
            .iter()
            .copied()
            .filter(|c| *c != Capability::SysResource)
            .collect();
        let e = effective(&capabilities(&sc(&["ALL"], &[]), Some(&held)).unwrap());
        assert_eq!(e, held);
        let privileged = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let c = capabilities(&privileged, Some(&held)).unwrap();
        assert_eq!(c.bounding().clone().unwrap_or_default(), held);
        assert_eq!(c.permitted().clone().unwrap_or_default(), held);
        // Dropping one the runtime lacks is fine; asking for it is refused, naming it.
        assert!(capabilities(&sc(&[], &["SYS_RESOURCE"]), Some(&held)).is_ok());
        let err = capabilities(&sc(&["CHOWN", "SYS_RESOURCE"], &[]), Some(&held)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.security_context.capabilities.add_capabilities[1]: \"SYS_RESOURCE\": the \
             runtime itself does not hold this capability"
        );
    }

    #[test]
    fn masked_and_readonly_paths() {
        let mut s = LinuxContainerSecurityContext::default();
        assert!(masked_paths(&s).contains(&"/proc/kcore".to_string()));
        assert!(readonly_paths(&s).contains(&"/proc/sys".to_string()));
        s.masked_paths = vec!["/proc/custom".into()];
        s.readonly_paths = vec!["/proc/ro".into()];
        assert_eq!(masked_paths(&s), ["/proc/custom"]);
        assert_eq!(readonly_paths(&s), ["/proc/ro"]);
        s.privileged = true;
        assert!(masked_paths(&s).is_empty());
        assert!(readonly_paths(&s).is_empty());
    }
}
