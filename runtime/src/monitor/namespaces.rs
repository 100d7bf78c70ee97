//! The pod's namespaces: the monitor moves itself into new network, IPC and UTS namespaces and
//! pins each with a bind mount, so containers and CNI can join them by path and they outlive
//! any one process. A pod that shares its process namespace also gets a PID namespace, held by
//! a forked init process (its PID 1) that reaps what the pod's processes orphan.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use std::os::fd::{AsRawFd, RawFd};

/// Which namespaces the pod gets of its own (the rest are the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNamespaces {
    /// A network namespace (not hostNetwork).
    pub network: bool,
    /// An IPC namespace (not hostIPC).
    pub ipc: bool,
    /// A UTS namespace; only with `network`, as the kubelet does.
    pub uts: bool,
    /// A PID namespace shared by the pod's containers (shareProcessNamespace).
    pub pid: bool,
}

impl PodNamespaces {
    fn kinds(self) -> Vec<(&'static str, CloneFlags)> {
        let mut kinds = Vec::new();
        if self.network {
            kinds.push(("net", CloneFlags::CLONE_NEWNET));
        }
        if self.ipc {
            kinds.push(("ipc", CloneFlags::CLONE_NEWIPC));
        }
        if self.uts {
            kinds.push(("uts", CloneFlags::CLONE_NEWUTS));
        }
        kinds
    }
}

/// Where namespace `kind` (`net`, `ipc`, `uts`, `pid`) of a pod is pinned.
pub fn pin_path(ns_dir: &Path, kind: &str) -> PathBuf {
    ns_dir.join(kind)
}

/// Unshares the wanted namespaces (the calling process must be single-threaded), sets the
/// hostname and pins them under `ns_dir`. With `network_pinned` the pod's network namespace
/// already exists, pinned under `ns_dir` by [`create_network`]: the process joins it instead.
/// Returns the PID namespace's init process when the pod has one.
pub fn create(
    wanted: PodNamespaces,
    hostname: &str,
    ns_dir: &Path,
    network_pinned: bool,
) -> Result<Option<Pid>, String> {
    let mut kinds = wanted.kinds();
    if wanted.network && network_pinned {
        let pin = pin_path(ns_dir, "net");
        let netns = std::fs::File::open(&pin)
            .map_err(|e| format!("open the pod network namespace {}: {e}", pin.display()))?;
        nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("join the pod network namespace {}: {e}", pin.display()))?;
        kinds.retain(|(kind, _)| *kind != "net");
    }
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |all, (_, flag)| all | *flag);
    if !flags.is_empty() {
        unshare(flags).map_err(|e| format!("unshare pod namespaces: {e}"))?;
    }
    if wanted.uts && !hostname.is_empty() {
        nix::unistd::sethostname(hostname)
            .map_err(|e| format!("set hostname {hostname:?}: {e}"))?;
    }
    std::fs::create_dir_all(ns_dir).map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    for (kind, _) in kinds {
        pin(ns_dir, kind)?;
    }
    if wanted.network && !network_pinned {
        loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
    }
    if wanted.pid {
        return create_pid(ns_dir).map(Some);
    }
    Ok(None)
}

/// Makes the pod's PID namespace: unsharing it only affects children, so a forked child becomes
/// its PID 1 and the namespace lives as long as that child. Its `/proc/<pid>/ns/pid` is pinned
/// for containers to join.
fn create_pid(ns_dir: &Path) -> Result<Pid, String> {
    let own = std::fs::File::open("/proc/self/ns/pid")
        .map_err(|e| format!("open our own PID namespace: {e}"))?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare a PID namespace: {e}"))?;
    // Opened before the fork: the child must not allocate (the parent could hold any lock).
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    // SAFETY: the monitor is single-threaded here, and the child only makes raw system calls
    // (no allocation, no locks) before it loops forever or exits.
    match unsafe { fork() }.map_err(|e| format!("fork the pod's PID 1: {e}"))? {
        ForkResult::Child => pid_init(null.as_raw_fd()),
        ForkResult::Parent { child } => {
            drop(null);
            // Later children (libcontainer's processes, execs) must stay in our namespace: were
            // they born in the pod's, their orphans would go to the pod's PID 1 instead of to
            // us, and we would never see the containers exit. Containers join the pod's
            // namespace by its pin, as they join the others.
            if let Err(e) = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID) {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(format!("return to our own PID namespace: {e}"));
            }
            if let Err(e) = pin_from(&format!("/proc/{child}/ns/pid"), ns_dir, "pid") {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            Ok(child)
        }
    }
}

/// PID 1 of a pod's PID namespace: dies with the monitor, lets go of the monitor's standard
/// streams (the daemon waits for their end), and reaps every process the pod orphans.
fn pid_init(null: RawFd) -> ! {
    use nix::libc;
    // SAFETY: plain system calls on values owned by this process; no memory is shared with the
    // parent any more (fork copied it) and nothing here allocates.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        loop {
            let mut signal = 0;
            libc::sigwait(&chld, &mut signal);
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        }
    }
}

/// Creates a network namespace with `lo` up and pins it under `ns_dir`, from a short-lived
/// thread of the calling (multi-threaded) process: the namespace is the thread's alone, and the
/// thread ends instead of switching back, so no other work can ever run inside it. The daemon
/// does this so that CNI ADD can run while the pod's monitor is still starting; the monitor
/// then joins the pinned namespace ([`create`] with `network_pinned`).
pub fn create_network(ns_dir: &Path, sysctls: &[(PathBuf, String)]) -> Result<(), String> {
    std::fs::create_dir_all(ns_dir).map_err(|e| format!("create {}: {e}", ns_dir.display()))?;
    let ns_dir = ns_dir.to_path_buf();
    let sysctls = sysctls.to_vec();
    std::thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare a network namespace: {e}"))?;
            pin(&ns_dir, "net")?;
            loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
            // /proc/sys/net resolves against the writing thread's namespace: this one.
            for (file, value) in &sysctls {
                std::fs::write(file, value)
                    .map_err(|e| format!("set sysctl {} to {value:?}: {e}", file.display()))?;
            }
            Ok(())
        })
        .map_err(|e| format!("start the namespace thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
}

/// Bind-mounts the calling thread's namespace `kind` on its pin file under `ns_dir`.
fn pin(ns_dir: &Path, kind: &str) -> Result<(), String> {
    // thread-self, not self: the daemon pins from one thread of many.
    pin_from(&format!("/proc/thread-self/ns/{kind}"), ns_dir, kind)
}

/// Bind-mounts the namespace file `source` on the pin file of `kind` under `ns_dir`.
fn pin_from(source: &str, ns_dir: &Path, kind: &str) -> Result<(), String> {
    let pin = pin_path(ns_dir, kind);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&pin)
        .map_err(|e| format!("create {}: {e}", pin.display()))?;
    mount(
        Some(source),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pin {source} on {}: {e}", pin.display()))
}

/// Unpins every namespace under `ns_dir` and removes the files; missing ones are fine.
pub fn release(ns_dir: &Path) -> Result<(), String> {
    for kind in ["net", "ipc", "uts", "pid"] {
        let pin = pin_path(ns_dir, kind);
        match umount2(&pin, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(format!("unpin {}: {e}", pin.display())),
        }
        match std::fs::remove_file(&pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("remove {}: {e}", pin.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` of the current network namespace with the classic ioctl: the monitor has
/// no async runtime for rtnetlink, and one flag on one known interface needs no more.
fn loopback_up() -> Result<(), Errno> {
    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `request` and fills its flags union
    // member; the socket and the request outlive the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: after SIOCGIFFLAGS the flags member is the initialised union field.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above, SIOCSIFFLAGS only reads `request`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
