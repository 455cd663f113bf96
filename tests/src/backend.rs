//! Starting and stopping the backend (`vhost-net-user`) over either link, running it to its
//! exit, and reading its log and connection summary.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::env::backend_bin;
use crate::process::{command_in, kill_and_reap, read_lossy, send_signal, wait_timeout};
use crate::{Error, Net, Result, TempDir, netns};

/// How a backend run to its end ([`run_backend_to_exit`]) ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: still running after the timeout, and killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// The variable naming the backend's system configuration file, and an empty one: the tests
/// run the backend as their arguments say, whatever /etc/vhost-net-user/config.toml says.
const CONFIG_ENV: &str = "VHOST_NET_USER_CONFIG";
const NO_CONFIG: &str = "/dev/null";

/// Runs the backend binary with `args` until it exits, killing it after `timeout`: for
/// configurations it must refuse at startup (one that accepted them would serve forever).
pub fn run_backend_to_exit(args: &[&str], timeout: Duration) -> Result<Finished> {
    let bin = backend_bin()?;
    let dir = TempDir::new("backend-run")?;
    let (stdout, stderr) = (dir.join("out"), dir.join("err"));
    let file = |path: &Path| File::create(path).map_err(|e| Error::new(format!("{e}")));
    let mut child = Command::new(&bin)
        .args(args)
        .env(CONFIG_ENV, NO_CONFIG)
        .stdin(Stdio::null())
        .stdout(file(&stdout)?)
        .stderr(file(&stderr)?)
        .spawn()
        .map_err(|e| Error::new(format!("starting {}: {e}", bin.display())))?;
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    Ok(Finished {
        status,
        stdout: read_lossy(&stdout),
        stderr: read_lossy(&stderr),
    })
}

/// Which link connects QEMU to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// vhost-user (`--socket-path`): the backend works on the guest's virtio rings in shared
    /// memory, with offloads.
    Ring,
    /// QEMU `-netdev stream` (`--stream`): frames over a UNIX socket, each preceded by its
    /// length (4 bytes, big-endian); no shared memory, no offloads.
    Stream,
}

impl Link {
    /// A short label for test and guest names: `ring` or `stream`.
    pub fn name(self) -> &'static str {
        match self {
            Link::Ring => "ring",
            Link::Stream => "stream",
        }
    }

    /// The backend's flag that takes the socket path.
    fn socket_flag(self) -> &'static str {
        match self {
            Link::Ring => "--socket-path",
            Link::Stream => "--stream",
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Declares two tests for an end-to-end test function `NAME(link: Link)`: `NAME::over_ring`
/// and `NAME::over_stream`, so that every such test runs over both links.
#[macro_export]
macro_rules! both_links {
    ($test:ident) => {
        mod $test {
            #[test]
            fn over_ring() {
                super::$test($crate::Link::Ring);
            }

            #[test]
            fn over_stream() {
                super::$test($crate::Link::Stream);
            }
        }
    };
}

/// A running `vhost-net-user` listening on a socket in its own temp dir; stopped on drop.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    exit: Option<ExitStatus>,
    socket: PathBuf,
    link: Link,
    log: PathBuf,
    dir: TempDir,
}

impl Backend {
    /// Starts `vhost-net-user --socket-path DIR/vu.sock ARGS...` and waits (up to 10 s) for the
    /// socket to appear. Its stderr (the log) goes to DIR/backend.log, see [`Backend::log`].
    pub fn start(args: &[&str]) -> Result<Backend> {
        Self::start_link(Link::Ring, args)
    }

    /// Like [`Backend::start`], with the stream link: `vhost-net-user --stream DIR/vu.sock`.
    pub fn start_stream(args: &[&str]) -> Result<Backend> {
        Self::start_link(Link::Stream, args)
    }

    /// Like [`Backend::start`], inside network namespace `ns` (`ip netns exec`, which execs
    /// the backend, so [`Backend::pid`] is still the backend's own).
    pub fn start_in(ns: &netns::Netns, args: &[&str]) -> Result<Backend> {
        Self::start_link_in(Link::Ring, ns, args)
    }

    /// [`Backend::start`] or [`Backend::start_stream`], as `link` says.
    pub fn start_link(link: Link, args: &[&str]) -> Result<Backend> {
        Self::launch(link, args, None)
    }

    /// [`Backend::start_link`] inside network namespace `ns` (see [`Backend::start_in`]).
    pub fn start_link_in(link: Link, ns: &netns::Netns, args: &[&str]) -> Result<Backend> {
        Self::launch(link, args, Some(ns))
    }

    fn launch(link: Link, args: &[&str], ns: Option<&netns::Netns>) -> Result<Backend> {
        let socket_flag = link.socket_flag();
        let bin = backend_bin()?;
        let dir = TempDir::new("backend")?;
        // Started as root (as the tests run), the backend drops to nobody. In a directory only
        // root may write, its janitor (still root) removes the socket once the backend has
        // exited, a moment after; writable by nobody, the backend removes it itself before it
        // exits, so that tests may check it is gone as soon as they see the exit status.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .map_err(|e| Error::new(format!("{}: {e}", dir.path().display())))?;
        let socket = dir.join("vu.sock");
        let log = dir.join("backend.log");
        let stderr = File::create(&log).map_err(|e| Error::new(format!("{e}")))?;
        let stdout =
            File::create(dir.join("backend.out")).map_err(|e| Error::new(format!("{e}")))?;
        let child = command_in(ns.map(netns::Netns::name), &bin)
            .arg(socket_flag)
            .arg(&socket)
            .args(args)
            .env(CONFIG_ENV, NO_CONFIG)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::new(format!("starting {}: {e}", bin.display())))?;
        let mut backend = Backend {
            child,
            exit: None,
            socket,
            link,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if is_socket(&backend.socket) {
                return Ok(backend);
            }
            if let Some(status) = backend.try_exit() {
                return Err(Error::new(format!(
                    "backend `{} {socket_flag} {} {}` exited ({status}) before listening:\n{}",
                    bin.display(),
                    backend.socket.display(),
                    args.join(" "),
                    backend.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "backend did not create {} within 10 s:\n{}",
                    backend.socket.display(),
                    backend.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The socket QEMU connects to (vhost-user, or `-netdev stream`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The link this backend serves.
    pub fn link(&self) -> Link {
        self.link
    }

    /// The backend's temp dir (a place for its pcap file and the like).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The network that connects a guest to this backend.
    pub fn net(&self) -> Net {
        if self.link == Link::Stream {
            return Net::Raw {
                args: vec![
                    "-netdev".into(),
                    format!(
                        "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                        self.socket.display()
                    ),
                ],
                shared_memory: false,
                vectors: None,
            };
        }
        Net::VhostUser {
            socket: self.socket.clone(),
            reconnect: false,
        }
    }

    /// Everything the backend wrote to stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// The counters the backend logs when its frontend goes away (what follows `connection
    /// summary: ` on its last such line), waiting up to `timeout` for QEMU's exit to reach it.
    pub fn connection_summary(&self, timeout: Duration) -> Option<String> {
        const MARK: &str = "connection summary: ";
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some((_, summary)) = log.lines().rev().find_map(|l| l.split_once(MARK)) {
                return Some(summary.to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the backend to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_timeout(&mut self.child, timeout);
        }
        self.exit
    }

    /// Stops the backend: SIGTERM, then SIGKILL after 5 s. Returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        send_signal(self.child.id(), rustix::process::Signal::TERM);
        if let Some(status) = self.wait_exit(Duration::from_secs(5)) {
            return status;
        }
        eprintln!("vnu-tests: backend ignored SIGTERM for 5 s; killing it");
        let _ = self.child.kill();
        let status = self.child.wait().expect("waiting for a killed child");
        self.exit = Some(status);
        status
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// The value under `key` in a backend's connection summary, whose counters are `key=value`
/// words (netcore's `Stats` text form, then the ring's: `tcp.out_of_order=3 ring.late_tx=0`).
/// None when the summary has no such key: a caller must not read that as zero.
pub fn summary_counter(summary: &str, key: &str) -> Option<u64> {
    summary
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counter_reads_whole_keys_only() {
        let summary = "tx_frames=12 tcp.out_of_order=7 udp.restricted=0 ring.late_tx=3";
        assert_eq!(summary_counter(summary, "tcp.out_of_order"), Some(7));
        assert_eq!(summary_counter(summary, "tx_frames"), Some(12));
        assert_eq!(summary_counter(summary, "ring.late_tx"), Some(3));
        assert_eq!(summary_counter(summary, "udp.restricted"), Some(0));
        assert_eq!(
            summary_counter(summary, "out_of_order"),
            None,
            "a key's tail"
        );
        assert_eq!(summary_counter(summary, "tcp.out_of"), None, "a key's head");
        assert_eq!(summary_counter(summary, "tcp.short_writes"), None, "absent");
    }
}
