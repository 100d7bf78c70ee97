//! The executor of exec'd processes: libcontainer 0.7 rebuilds a tenant's Linux section
//! without the container's seccomp profile, so a process exec'd into a confined container would
//! run unconfined. This executor installs the container's profile in the new process, as the
//! last step before it becomes the command, then hands over to libcontainer's default one.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// Runs the command under `seccomp`, the container's profile (none: unconfined, as the container).
#[derive(Clone, Default)]
pub struct ConfinedExecutor {
    /// The container's seccomp profile.
    pub seccomp: Option<LinuxSeccomp>,
}

impl Executor for ConfinedExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(profile) = &self.seccomp {
            install(profile)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Loads `profile` into this process. The kernel takes a filter from a process with
/// CAP_SYS_ADMIN or with no_new_privs set; the capabilities are already the container's here,
/// so without CAP_SYS_ADMIN no_new_privs is set first (runc loads the filter before dropping
/// capabilities instead, which libcontainer's tenant path gives no hook for).
fn install(profile: &LinuxSeccomp) -> Result<(), ExecutorError> {
    let loaded = libcontainer::seccomp::initialize_seccomp(profile).or_else(|_| {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| ExecutorError::Other(format!("set no_new_privs for seccomp: {e}")))?;
        libcontainer::seccomp::initialize_seccomp(profile)
            .map_err(|e| ExecutorError::Other(format!("load the seccomp profile: {e}")))
    })?;
    if let Some(notify) = loaded {
        // Notify actions need a listener, which the runtime does not run; the profile has
        // none unless a Localhost one asked for it, and then the kernel answers ENOSYS.
        let _ = nix::unistd::close(notify);
    }
    Ok(())
}
