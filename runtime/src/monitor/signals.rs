//! Signals as bytes on a pipe, so the monitor's poll loop sees SIGCHLD and SIGTERM without
//! blocking them: a blocked mask would be inherited by every container process.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one byte on this stack frame.
        // A full pipe drops the byte, which is fine: one pending byte already wakes the loop.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// The read side of the signal pipe.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    /// Routes SIGCHLD, SIGTERM and SIGINT to the pipe.
    pub fn install() -> Result<Self, String> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("signal pipe: {e}"))?;
        WRITE_END.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only calls write(2) on a descriptor that lives as long as
            // this SignalPipe, which the monitor keeps until it exits.
            unsafe { sigaction(signal, &action) }
                .map_err(|e| format!("sigaction {signal}: {e}"))?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// The descriptor to poll.
    pub fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals received since the last call.
    pub fn drain(&self) -> Vec<i32> {
        let mut buffer = [0u8; 64];
        let mut signals = Vec::new();
        while let Ok(n) = nix::unistd::read(self.read.as_raw_fd(), &mut buffer) {
            if n == 0 {
                break;
            }
            signals.extend(buffer[..n].iter().map(|b| i32::from(*b)));
        }
        signals
    }
}
