//! The guest forwards' launcher: a small process, forked at startup before the backend confines
//! itself, that starts the plan's guest forward commands (and so smbd) on request.
//!
//! # Theory of operation
//!
//! A confined backend cannot start programs: its seccomp filter has no `execve`, and a filter
//! and a Landlock domain would pass on to every child, where smbd or a user's command could not
//! live with them. So when the plan has guest forwards, the program forks this launcher while it
//! is still one thread and unconfined ([`Launcher::fork`]). The launcher keeps only standard
//! input, output and error and its end of a socket pair, confines itself as the caller says
//! (the same unprivileged user, no new privileges), and then serves requests: a forward's index
//! and, attached as `SCM_RIGHTS`, the connection the command gets as its standard streams.
//! It answers each with 0 or the errno of the failed start, and reaps the commands that ended.
//! The words it runs are those of the plan it was forked with; the backend only picks one of
//! them by index. When the backend goes (its end of the pair closes), the launcher exits.
//!
//! [`crate::guestfwd::Commands`] uses the launcher once [`install`] has made it the process's.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use netplan::GuestForward;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::command::{self, MAX_RUNNING};

/// Errno answered when [`MAX_RUNNING`] commands run already.
const TOO_MANY: i32 = libc::EAGAIN;

/// How long the backend waits for an answer (a start is a fork and an exec).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The backend's end of the launcher.
#[derive(Debug)]
pub struct Launcher {
    sock: Mutex<UnixStream>,
    pid: u32,
}

static LAUNCHER: OnceLock<Launcher> = OnceLock::new();

/// Makes `launcher` the one guest forward commands start through, from now on.
pub fn install(launcher: Launcher) {
    let _ = LAUNCHER.set(launcher);
}

/// The launcher [`install`] made the process's, if any.
pub fn installed() -> Option<&'static Launcher> {
    LAUNCHER.get()
}

impl Launcher {
    /// Forks the launcher for `forwards`. In the new process, `confine` runs first (a failure
    /// ends the launcher, and commands then fail to start). Fails when the process has more
    /// than one thread.
    pub fn fork(
        forwards: Vec<GuestForward>,
        confine: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Launcher> {
        let (ours, theirs) = UnixStream::pair()?;
        let keep = theirs.as_raw_fd();
        let pid = crate::sys::fork_process(keep, move || {
            if let Err(e) = confine() {
                log::error!("guest forward launcher: confining failed: {e}");
                return 1;
            }
            serve(&theirs, &forwards);
            0
        })?;
        // `theirs` went with the closure: the parent keeps only its own end.
        ours.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Launcher {
            sock: Mutex::new(ours),
            pid,
        })
    }

    /// The launcher's process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts guest forward `index`'s command on `conn` (its standard streams).
    pub fn start(&self, index: usize, conn: OwnedFd) -> io::Result<()> {
        let index = u32::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "no such guest forward"))?;
        let mut sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        sock.send_with_fd(&index.to_le_bytes()[..], conn.as_raw_fd())
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        drop(conn);
        let mut answer = [0u8; 4];
        sock.read_exact(&mut answer)?;
        match i32::from_le_bytes(answer) {
            0 => Ok(()),
            TOO_MANY => Err(io::Error::other(format!(
                "{MAX_RUNNING} guest forward commands are running already"
            ))),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// The launcher's loop: start what is asked, reap what ended, until the backend goes.
fn serve(sock: &UnixStream, forwards: &[GuestForward]) {
    let mut running: Vec<Child> = Vec::new();
    // Wakes at least once a second to reap commands that ended.
    if sock.set_read_timeout(Some(Duration::from_secs(1))).is_err() {
        return;
    }
    loop {
        running.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        let mut request = [0u8; 4];
        let (n, conn) = match sock.recv_with_fd(&mut request) {
            Ok(got) => got,
            Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => continue,
            Err(_) => return,
        };
        if n != request.len() {
            // The backend closed its end (n == 0), or broke the protocol.
            return;
        }
        let index = u32::from_le_bytes(request) as usize;
        let answer = match (conn, forwards.get(index)) {
            (_, _) if running.len() >= MAX_RUNNING => TOO_MANY,
            (Some(conn), Some(forward)) => match command::spawn(&forward.argv, conn.into()) {
                Ok(child) => {
                    running.push(child);
                    0
                }
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            },
            (None, _) => libc::EBADF,
            (_, None) => libc::ENOENT,
        };
        let mut writer = sock;
        if writer.write_all(&answer.to_le_bytes()).is_err() {
            return;
        }
    }
}
