//! Seccomp: the RuntimeDefault profile built in code, Unconfined, and Localhost profiles read
//! from the node.
//!
//! RuntimeDefault is a deny list (allow by default, EPERM for the listed calls) rather than
//! Docker's allow list: it blocks the calls that act on the whole host or have a history of
//! container escapes, and it keeps a group allowed when the container holds the capability
//! that the kernel would check for it anyway, as Docker's profile does (a container granted
//! SYS_ADMIN may mount, one granted SYS_TIME may set the clock). ptrace stays allowed: since
//! Linux 4.8 seccomp is re-checked after a tracer changes a syscall, so ptrace no longer bypasses
//! the filter.

use std::path::PathBuf;

use capstan_proto::LinuxContainerSecurityContext;
use capstan_proto::security_profile::ProfileType;
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::SpecError;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// Syscall groups the default profile denies, each with the capability that lifts the denial
/// (`None`: denied even then, because the call is not namespaced at all).
const DENIED: &[(Option<Capability>, &[&str])] = &[
    // Kernel keyring: not namespaced, one container could read another's keys.
    (None, &["add_key", "request_key", "keyctl"]),
    // Replace or extend the running kernel.
    (None, &["kexec_load", "kexec_file_load"]),
    (
        Some(Capability::SysModule),
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
        ],
    ),
    (Some(Capability::SysBoot), &["reboot"]),
    // Host-wide swap and accounting.
    (None, &["swapon", "swapoff"]),
    (Some(Capability::SysPacct), &["acct"]),
    // The clock is not namespaced.
    (
        Some(Capability::SysTime),
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (Some(Capability::Bpf), &["bpf"]),
    (Some(Capability::Perfmon), &["perf_event_open"]),
    // Page-fault handling from user space made several kernel races exploitable.
    (Some(Capability::SysPtrace), &["userfaultfd"]),
    // Filesystem and namespace surgery.
    (
        Some(Capability::SysAdmin),
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "setns",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "name_to_handle_at",
            "fanotify_init",
        ],
    ),
    // The "shocker" escape: opens host files by handle.
    (Some(Capability::DacReadSearch), &["open_by_handle_at"]),
    (Some(Capability::SysRawio), &["iopl", "ioperm"]),
    (Some(Capability::Syslog), &["syslog"]),
    (Some(Capability::SysTtyConfig), &["vhangup"]),
    // Obsolete interfaces with no business in a container.
    (
        None,
        &[
            "nfsservctl",
            "get_kernel_syms",
            "query_module",
            "uselib",
            "vm86",
            "vm86old",
            "_sysctl",
            "sysfs",
            "ustat",
        ],
    ),
];

/// Picks the profile for the container, or `None` for no filter.
pub(super) fn profile(
    sc: &LinuxContainerSecurityContext,
    default_when_unset: bool,
    caps: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    const FIELD: &str = "linux.security_context.seccomp";
    // containerd's rule: a privileged container runs without a filter whatever the request says
    // (kubelet sends RuntimeDefault for every container under `--seccomp-default`).
    if sc.privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(default_profile(caps)?)),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) if p.localhost_ref.is_empty() => Err(SpecError::invalid(
                format!("{FIELD}.localhost_ref"),
                "a Localhost profile needs the path of the profile file",
            )),
            Ok(ProfileType::Localhost) => {
                load(&p.localhost_ref, &format!("{FIELD}.localhost_ref")).map(Some)
            }
            Err(_) => Err(SpecError::invalid(
                format!("{FIELD}.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )),
        };
    }
    // The deprecated string field, still sent by old clients.
    const OLD: &str = "linux.security_context.seccomp_profile_path";
    #[allow(deprecated)]
    let old = sc.seccomp_profile_path.as_str();
    match old {
        "" if default_when_unset => Ok(Some(default_profile(caps)?)),
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_profile(caps)?)),
        other => match other.strip_prefix("localhost/") {
            Some(path) => load(path, OLD).map(Some),
            None => Err(SpecError::invalid(
                OLD,
                format!("unknown profile {other:?}"),
            )),
        },
    }
}

/// The RuntimeDefault profile for a container holding `caps` (its effective set).
pub fn default_profile(caps: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let mut denied: Vec<String> = Vec::new();
    for (cap, names) in DENIED {
        if cap.is_none_or(|c| !caps.contains(&c)) {
            denied.extend(names.iter().map(|n| n.to_string()));
        }
    }
    let mut syscalls = vec![errno(denied, EPERM, None)?];
    // clone3 passes its flags in memory seccomp cannot read; ENOSYS makes libc fall back to
    // clone, whose flags the rule below can check.
    if !caps.contains(&Capability::SysAdmin) {
        syscalls.push(errno(vec!["clone3".into()], ENOSYS, None)?);
        // A new user namespace hands the process a full capability set over it, the first
        // step of many kernel exploits; unshare and clone take the flags in argument 0 (on
        // s390 clone takes them in argument 1, which this host list does not include).
        let newuser = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(CLONE_NEWUSER)
            .value_two(CLONE_NEWUSER)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        syscalls.push(errno(
            vec!["unshare".into(), "clone".into()],
            EPERM,
            Some(newuser),
        )?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()?)
}

fn errno(
    names: Vec<String>,
    code: u32,
    arg: Option<oci_spec::runtime::LinuxSeccompArg>,
) -> Result<LinuxSyscall, SpecError> {
    let b = LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(code);
    Ok(match arg {
        Some(a) => b.args(vec![a]).build()?,
        None => b.build()?,
    })
}

/// The native ABI plus the compat ones the CPU can also run, so a 32-bit binary cannot use the
/// other syscall table to step around the rules.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// Reads a profile in the OCI `linux.seccomp` JSON form, which Docker-format profiles also
/// parse as (their `archMap` and per-rule `includes`/`excludes` are ignored, so conditional
/// rules apply unconditionally).
fn load(path: &str, field: &str) -> Result<LinuxSeccomp, SpecError> {
    let path = PathBuf::from(path);
    let err = |reason: String| SpecError::SeccompProfile {
        field: field.to_string(),
        path: path.clone(),
        reason,
    };
    if !path.is_absolute() {
        return Err(err("not an absolute path".into()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("not a valid profile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::SecurityProfile;

    fn sc(t: ProfileType, localhost_ref: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: localhost_ref.into(),
            }),
            ..Default::default()
        }
    }

    fn denied(p: &LinuxSeccomp, name: &str) -> bool {
        p.syscalls()
            .iter()
            .flatten()
            .any(|s| s.args().is_none() && s.names().iter().any(|n| n == name))
    }

    #[test]
    fn runtime_default_denies_host_wide_calls() {
        let p = profile(
            &sc(ProfileType::RuntimeDefault, ""),
            false,
            &Capabilities::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        for name in [
            "kexec_load",
            "init_module",
            "mount",
            "keyctl",
            "bpf",
            "open_by_handle_at",
        ] {
            assert!(denied(&p, name), "{name} not denied");
        }
        assert!(!denied(&p, "ptrace"));
        assert!(!denied(&p, "read"));
        let newuser = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names().iter().any(|n| n == "unshare"))
            .expect("unshare rule");
        let arg = &newuser.args().as_ref().expect("args")[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(arg.value(), CLONE_NEWUSER);
    }

    #[test]
    fn capabilities_lift_their_groups() {
        let caps: Capabilities = [Capability::SysAdmin, Capability::SysTime]
            .into_iter()
            .collect();
        let p = default_profile(&caps).unwrap();
        assert!(!denied(&p, "mount"));
        assert!(!denied(&p, "clock_settime"));
        assert!(denied(&p, "kexec_load"));
        assert!(denied(&p, "keyctl"));
        assert!(
            !p.syscalls()
                .iter()
                .flatten()
                .any(|s| s.names().iter().any(|n| n == "unshare"))
        );
    }

    /// Loads the profile through libcontainer into one thread (a seccomp filter without TSYNC
    /// binds only the thread that loads it) and checks what the kernel then answers.
    #[test]
    fn default_profile_loads_and_denies() {
        use nix::errno::Errno;
        let profile = default_profile(&Capabilities::new()).unwrap();
        std::thread::spawn(move || {
            // Loading a filter needs no_new_privs or CAP_SYS_ADMIN; set it so non-root runs too.
            nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
            libcontainer::seccomp::initialize_seccomp(&profile).expect("libseccomp takes it");
            // Unfiltered, unshare(CLONE_NEWUSER) in a threaded process is EINVAL and mount on a
            // missing target is ENOENT; EPERM proves the filter answered.
            let r = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
            assert_eq!(r, Err(Errno::EPERM));
            let r = nix::mount::mount(
                Some("none"),
                "/nonexistent/capstan-seccomp-test",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
            assert_eq!(r, Err(Errno::EPERM));
            assert!(nix::unistd::getpid().as_raw() > 0);
            assert!(std::fs::metadata("/").is_ok());
        })
        .join()
        .expect("filtered thread");
    }

    #[test]
    fn unconfined_and_unset() {
        let none = Capabilities::new();
        assert!(
            profile(&sc(ProfileType::Unconfined, ""), true, &none)
                .unwrap()
                .is_none()
        );
        assert!(
            profile(&Default::default(), false, &none)
                .unwrap()
                .is_none()
        );
        assert!(profile(&Default::default(), true, &none).unwrap().is_some());
    }

    #[test]
    fn privileged_has_no_filter() {
        let mut s = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert!(profile(&s, true, &Capabilities::new()).unwrap().is_none());
        s.seccomp = sc(ProfileType::RuntimeDefault, "").seccomp;
        assert!(profile(&s, true, &Capabilities::new()).unwrap().is_none());
    }

    #[test]
    fn localhost_profile_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","comment":"x"}]}"#,
        )
        .unwrap();
        let p = profile(
            &sc(ProfileType::Localhost, path.to_str().unwrap()),
            false,
            &Capabilities::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.syscalls().as_ref().map(|s| s.len()), Some(1));
    }

    #[test]
    fn localhost_profile_missing_or_bad_names_the_path() {
        let none = Capabilities::new();
        let err = profile(
            &sc(ProfileType::Localhost, "/nonexistent/p.json"),
            false,
            &none,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("linux.security_context.seccomp.localhost_ref: "),
            "{msg}"
        );
        assert!(msg.contains("/nonexistent/p.json"), "{msg}");
        let err = profile(&sc(ProfileType::Localhost, ""), false, &none).unwrap_err();
        assert!(err.to_string().contains("localhost_ref"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = profile(
            &sc(ProfileType::Localhost, path.to_str().unwrap()),
            false,
            &none,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a valid profile"), "{err}");
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_path_field() {
        let none = Capabilities::new();
        let mut s = LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        };
        assert!(profile(&s, false, &none).unwrap().is_some());
        s.seccomp_profile_path = "unconfined".into();
        assert!(profile(&s, true, &none).unwrap().is_none());
        s.seccomp_profile_path = "weird".into();
        assert!(profile(&s, true, &none).is_err());
    }
}
