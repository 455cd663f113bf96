//! The crate's only unsafe code: receiving file descriptors and waiting for signals.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// The most descriptors one vhost-user message may carry.
pub const MAX_FDS: usize = 32;

/// Receives into `buf` with any attached descriptors, which the caller then owns.
pub fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    // SAFETY: the iovec covers exactly `buf`, which is ours and writable for its length; the
    // descriptor array is ours too.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let fds = raw[..nfds]
        .iter()
        .map(|&fd| {
            // SAFETY: the kernel just installed these descriptors for us and nothing else
            // refers to them, so taking ownership is sound.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    Ok((n, fds))
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
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
}

/// Closes `fd`, a descriptor its owner gave up without closing (see
/// `NetBackend::close_handed_out`).
pub fn close_abandoned(fd: RawFd) {
    // SAFETY: the caller passes a descriptor that was leaked with `into_raw_fd` and that nothing
    // uses any more; taking ownership once and dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
