//! The crate's only unsafe code: descriptors (closing inherited ones, marking ours
//! close-on-exec, a socket's send queue) and waiting for signals.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The most descriptors one vhost-user message may carry.
pub const MAX_FDS: usize = 32;

/// Receives into `buf` with any attached descriptors, which the caller then owns. They arrive
/// close-on-exec (`MSG_CMSG_CLOEXEC`): a child process must never get guest RAM.
pub fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let got = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok((got.bytes, fds))
}

/// Bytes written to `sock` that its peer has not read yet (`SIOCOUTQ`, which is `TIOCOUTQ`'s
/// number).
pub fn unread_by_peer(sock: &UnixStream) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which refers to a live local;
    // `sock` is an open socket for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Marks every descriptor from 3 up close-on-exec, whoever opened it. The vhost crate receives
/// QEMU's descriptors (guest RAM, kick and call eventfds) without `MSG_CMSG_CLOEXEC`; this is
/// how they get the flag. Closes nothing, so it is safe whatever owns them.
pub fn mark_all_close_on_exec() -> io::Result<()> {
    close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
}

/// Closes every descriptor from 3 up but `keep` (`--fd`): whatever the parent left open is not
/// ours to hand on to children, nor to hold.
///
/// # Safety
/// Call before anything in the process owns a descriptor above 2 other than `keep` (first
/// thing in `main`): an owner would go on using a closed number, or one reused by another.
pub unsafe fn close_inherited(keep: Option<RawFd>) -> io::Result<()> {
    let keep = keep
        .and_then(|fd| libc::c_uint::try_from(fd).ok())
        .filter(|&fd| fd >= 3);
    match keep {
        Some(fd) => {
            if fd > 3 {
                close_range(3, fd - 1, 0)?;
            }
            close_range(fd + 1, libc::c_uint::MAX, 0)
        }
        None => close_range(3, libc::c_uint::MAX, 0),
    }
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range takes plain integers. Closing descriptors that Rust objects own is
    // what the callers' contracts exclude: `close_inherited` is an unsafe fn, and with
    // CLOSE_RANGE_CLOEXEC nothing is closed.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it spawns afterwards, so
/// that [`wait_for_termination`] alone receives them.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until SIGTERM or SIGINT arrives; returns the signal number.
pub fn wait_for_termination() -> i32 {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: both pointers refer to live locals of the right types.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Takes ownership of an inherited listening socket (`--fd N`), after checking that `fd` is
/// an open socket that is listening; anything else is refused rather than adopted.
pub fn listener_from_fd(fd: RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local `accepting`; on a
    // descriptor that is not an open socket it fails without side effects.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if accepting == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening socket",
        ));
    }
    // SAFETY: `fd` is an open, listening socket (checked above) that the process inherited
    // for this purpose; nothing else in the process owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // Inherited without the flag, as descriptors passed to a child are.
    rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC)?;
    Ok(listener)
}

/// Closes `fd`, a descriptor its owner gave up without closing (see
/// `NetBackend::close_handed_out`).
pub fn close_abandoned(fd: RawFd) {
    // SAFETY: the caller passes a descriptor that was leaked with `into_raw_fd` and that nothing
    // uses any more; taking ownership once and dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
