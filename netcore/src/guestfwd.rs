//! slirp's `guestfwd=tcp:SERVER:PORT-cmd:COMMAND`: each guest TCP connection to SERVER:PORT
//! starts COMMAND, with the connection as its standard input, output and error.
//!
//! # Theory of operation
//!
//! The command runs on one end of a TCP connection over loopback, as libslirp makes one for
//! it (a command may ask for its peer's address: smbd serves only inet sockets); the other end
//! becomes the TCP flow's host socket, already connected, so the guest's SYN is answered at
//! once and the data path is that of any host connection. When the guest closes, the command
//! reads end of file; when the command exits (and no process of its own keeps the socket), the
//! guest gets a FIN.
//!
//! As libslirp's `fork_exec`, the words are the plan's (split once, without a shell), the
//! program is looked up in `PATH`, and the child leaves our process group (slirp calls
//! `setsid`), so a terminal's Ctrl-C to the backend does not reach it. It inherits nothing
//! else: the child marks every descriptor above 2 close-on-exec before it execs, those we
//! did not open ourselves included (the vhost crate receives guest RAM's memfd without the
//! flag).
//!
//! A confined backend cannot exec: there the [`crate::launcher`], forked before the backend
//! confined itself, starts the commands, and they run as its children.
//!
//! A guest can open connections faster than commands end, so at most `MAX_RUNNING` run at
//! once; a connection beyond that is reset. Ended children are reaped on every tick, and those
//! still running when the engine goes are left to a thread that waits for them.

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::Child;

use netplan::GuestForward;

use crate::command::{MAX_RUNNING, spawn};

/// The guest forwards of a plan and the commands they started.
#[derive(Debug)]
pub struct Commands {
    forwards: Vec<GuestForward>,
    running: Vec<Child>,
    /// Commands running at once, at most ([`MAX_RUNNING`] but in tests).
    limit: usize,
}

impl Default for Commands {
    fn default() -> Self {
        Commands::new(Vec::new())
    }
}

impl Commands {
    pub fn new(forwards: Vec<GuestForward>) -> Self {
        Commands::with_limit(forwards, MAX_RUNNING)
    }

    fn with_limit(forwards: Vec<GuestForward>, limit: usize) -> Self {
        Commands {
            forwards,
            running: Vec::new(),
            limit,
        }
    }

    /// Starts guest forward `index`'s command and returns our end of its connection.
    pub fn start(&mut self, index: usize) -> io::Result<OwnedFd> {
        self.reap();
        let Some(forward) = self.forwards.get(index) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such guest forward",
            ));
        };
        if self.running.len() >= self.limit {
            return Err(io::Error::other(format!(
                "{} guest forward commands are running already",
                self.limit
            )));
        }
        let (ours, theirs) = loopback_stream_pair()?;
        if let Some(launcher) = crate::launcher::installed() {
            // A confined backend starts nothing itself; the launcher counts what runs.
            launcher.start(index, theirs)?;
            return Ok(ours);
        }
        self.running.push(spawn(&forward.argv, theirs)?);
        Ok(ours)
    }

    /// Commands still running (after reaping those that ended).
    #[cfg(test)]
    fn running(&mut self) -> usize {
        self.reap();
        self.running.len()
    }

    /// Collects the exit status of commands that ended, so none stays a zombie.
    pub fn reap(&mut self) {
        self.running
            .retain_mut(|child| matches!(child.try_wait(), Ok(None)));
    }
}

/// A TCP connection over loopback, both ends ours: the accepted end non-blocking with
/// `TCP_NODELAY` (the flow's), the connecting end blocking (a child process's standard
/// streams), as libslirp's `slirp_socketpair_with_oob` makes for `fork_exec`. A command sees an
/// inet socket, as under slirp (smbd refuses to serve a unix one). Unlike slirp, the listener is
/// bound to 127.0.0.1 only, and a connection that is not ours is closed. Both close on exec.
fn loopback_stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let theirs = TcpStream::connect(listener.local_addr()?)?;
    let expected = theirs.local_addr()?;
    loop {
        let (ours, peer) = listener.accept()?;
        if peer == expected {
            ours.set_nonblocking(true)?;
            ours.set_nodelay(true)?;
            return Ok((ours.into(), theirs.into()));
        }
        // Another local process raced to the port: not the command's connection.
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.reap();
        let mut left = std::mem::take(&mut self.running);
        if !left.is_empty() {
            // They end when their peers close; wait for them without holding anyone up.
            let _ = std::thread::Builder::new()
                .name("guestfwd-reaper".into())
                .spawn(move || {
                    for child in &mut left {
                        let _ = child.wait();
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn forward(argv: &[&str]) -> GuestForward {
        GuestForward {
            addr: Ipv4Addr::new(10, 0, 2, 100),
            port: 1234,
            command: argv.join(" "),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn blocking(fd: OwnedFd) -> TcpStream {
        let stream = TcpStream::from(fd);
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    #[test]
    fn the_command_talks_over_its_standard_streams_and_is_reaped_when_it_ends() {
        let mut commands = Commands::new(vec![forward(&[
            "sh",
            "-c",
            "read line; echo \"out $line\"; echo err >&2",
        ])]);
        let mut conn = blocking(commands.start(0).unwrap());
        // As under slirp, the command's end is a TCP connection over loopback.
        assert!(conn.peer_addr().unwrap().ip().is_loopback());
        conn.write_all(b"hello\n").unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "out hello\nerr\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while commands.running() > 0 {
            assert!(Instant::now() < deadline, "the command was not reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The command gets its connection on 0, 1 and 2 and no other descriptor of this process,
    /// not even one that was not close-on-exec (as QEMU's memfd of guest RAM was, received by
    /// the vhost crate).
    #[test]
    fn the_command_gets_only_its_standard_streams() {
        let marker = std::env::temp_dir().join(format!("vnu-fd-marker-{}", std::process::id()));
        let file = std::fs::File::create(&marker).unwrap();
        // dup never sets close-on-exec.
        let leaky = rustix::io::dup(&file).unwrap();
        let mut commands = Commands::new(vec![forward(&[
            "sh",
            "-c",
            "for f in /proc/self/fd/*; do echo \"${f##*/} $(readlink $f)\"; done",
        ])]);
        let mut conn = blocking(commands.start(0).unwrap());
        drop(leaky);
        let _ = std::fs::remove_file(&marker);
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        // The shell's own come and go: the directory it lists (closed, so without a target, by
        // the time it is read) and a command substitution's pipe.
        let others: Vec<&str> = got
            .lines()
            .filter(|l| !matches!(l.split(' ').next(), Some("0" | "1" | "2")))
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, target)| !target.is_empty())
            })
            .filter(|l| !l.contains("/proc/") && !l.contains("pipe:"))
            .collect();
        assert!(
            others.is_empty(),
            "the command inherited {others:?}:\n{got}"
        );
        // (1 is the substitution's pipe while readlink runs.)
        for fd in ["0 socket:", "2 socket:"] {
            assert!(got.lines().any(|l| l.starts_with(fd)), "{fd}\n{got}");
        }
    }

    #[test]
    fn a_missing_program_fails_to_start_and_leaves_nothing_running() {
        let mut commands = Commands::new(vec![forward(&["/nonexistent/vnu-no-such-program"])]);
        let err = commands.start(0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(commands.running(), 0);
        assert!(commands.start(1).is_err(), "forward 1 does not exist");
    }

    #[test]
    fn commands_beyond_the_limit_are_refused() {
        const LIMIT: usize = 3;
        let mut commands = Commands::with_limit(vec![forward(&["cat"])], LIMIT);
        let mut conns: Vec<OwnedFd> = (0..LIMIT).map(|_| commands.start(0).unwrap()).collect();
        assert!(commands.start(0).is_err(), "one more than the limit");
        // One ends (its input closes): there is room again.
        drop(conns.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        while commands.running() == LIMIT {
            assert!(Instant::now() < deadline, "cat did not end on EOF");
            std::thread::sleep(Duration::from_millis(10));
        }
        conns.push(commands.start(0).unwrap());
    }
}
