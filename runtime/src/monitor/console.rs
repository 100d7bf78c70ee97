//! Terminals handed over through an OCI console socket: libcontainer creates the pty inside the
//! container (its own devpts, so the process gets it as controlling terminal) and sends the
//! master end over a unix socket with SCM_RIGHTS. Used by the monitor for containers with
//! `tty` and by the daemon for `exec -t`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// Waits up to `timeout` for libcontainer to connect to `listener` and send the master.
pub fn receive(listener: &UnixListener, timeout: Duration) -> Result<OwnedFd, String> {
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(listener),
        PollFlags::POLLIN,
    )];
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) => return Err("no terminal on the console socket in time".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("wait on the console socket: {e}")),
    }
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("accept on the console socket: {e}"))?;
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
        .map_err(|e| format!("console socket: {e}"))?;
    receive_fd(&stream)
}

/// Receives one descriptor sent with SCM_RIGHTS on `stream` (blocking).
pub fn receive_fd(stream: &UnixStream) -> Result<OwnedFd, String> {
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    for cmsg in message
        .cmsgs()
        .map_err(|e| format!("receive the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the console socket carried no descriptor".to_string())
}

/// Sets the terminal's size (TIOCSWINSZ); the kernel signals its foreground process group.
pub fn set_size(master: RawFd, width: u16, height: u16) -> std::io::Result<()> {
    let winsize = nix::libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call; a bad
    // descriptor only makes the call fail.
    let result = unsafe { nix::libc::ioctl(master, nix::libc::TIOCSWINSZ, &winsize) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_sent_with_scm_rights_is_received() {
        use nix::sys::socket::{ControlMessage, sendmsg};
        let (sender, receiver) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(
            sender.as_raw_fd(),
            &[std::io::IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let received = receive_fd(&receiver).unwrap();
        assert_ne!(received.as_raw_fd(), file.as_raw_fd());
        drop(sender);
        assert!(receive_fd(&receiver).is_err(), "nothing more was sent");
    }
}
