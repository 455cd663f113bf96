//! Private network namespaces for the NAT tests, so that guest traffic never leaves this machine.
//!
//! # Theory of operation
//!
//! A test builds its own little network: a [`Netns`] for the backend and QEMU (the "host"), one
//! for a remote test host, and a veth pair between them ([`veth`]). Names carry the test
//! process's pid and a counter (`vnu<pid><role><n>`), so parallel runs never collide. Everything
//! is a guard: a [`NsProcess`], a [`crate::Backend`] and a [`crate::SlottedGuest`] kill their
//! process when dropped; a [`Netns`] kills whatever still runs inside it (only this test's
//! processes can) and deletes itself, which also removes its end of the veth pair and so the pair.
//!
//! Processes enter a namespace through `ip netns exec NAME PROGRAM ...`, which `exec`s the program
//! itself (no fork): the child's pid is the program's pid, so `/proc/PID` (open fds, memory, and
//! `/proc/PID/net/*`, the namespace's socket tables) describes the program.
//! [`crate::Backend::start_in`] and [`spawn_guest`] are [`crate::Backend::start`] and
//! [`crate::spawn`] run that way; the [`crate::SlottedGuest`] of [`spawn_guest`] also lets the
//! test watch the console while the guest runs, to measure the backend at points the guest
//! script marks.
//!
//! Needs root (`ip netns add`); [`ready`] says whether the tests can run.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::guest::spawn_in;
use crate::process::{command_in, kill_if_running, read_lossy, send_signal};
use crate::slots::SlotGuard;
use crate::{Error, GuestOpts, GuestRun, Result, SlottedGuest, tail};

fn unique(role: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("vnu{}{role}{n}", std::process::id())
}

/// Runs `program args...` to completion; an error with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether namespace tests can run here: root (for `ip netns add`) and iproute2. If not, reports
/// the skip like [`crate::e2e_ready`] (a failure unless `VNU_E2E_ALLOW_SKIP=1`).
pub fn ready() -> bool {
    use std::os::unix::fs::MetadataExt;
    if !crate::require_program("ip", "iproute2") {
        return false;
    }
    // /proc/self belongs to the effective user.
    match std::fs::metadata("/proc/self") {
        Ok(m) if m.uid() == 0 => true,
        _ => crate::skip("network namespaces need root (run as root, as scripts/test.sh does)"),
    }
}

/// A network namespace of this test process; deleted (with whatever still runs in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vnu<pid><role><n>` with its loopback up.
    pub fn new(role: &str) -> Result<Netns> {
        let name = unique(role);
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all).map(drop)
    }

    /// Sets a sysctl inside the namespace (the `net.*` ones are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let setting = format!("{key}={value}");
        run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-qw", &setting],
        )
        .map(drop)
    }

    /// A command that runs `program` inside the namespace, stdin from /dev/null.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(Some(&self.name), program)
    }

    /// Starts `program args...` inside the namespace with stdout and stderr in `log`.
    pub fn spawn(&self, program: &str, args: &[&str], log: &Path) -> Result<NsProcess> {
        let out = File::create(log)
            .map_err(|e| Error::new(format!("creating {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| Error::new(format!("{e}")))?;
        let child = self
            .command(program)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::new(format!("starting {program} in {}: {e}", self.name)))?;
        Ok(NsProcess {
            child,
            label: format!("{program} (in {})", self.name),
            log: log.to_path_buf(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The namespace is this test's own: anything still inside was started by this test.
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                send_signal(pid, rustix::process::Signal::KILL);
            }
        }
        for _ in 0..50 {
            match run("ip", &["netns", "pids", &self.name]) {
                Ok(pids) if !pids.trim().is_empty() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("vnu-tests: deleting network namespace {}: {e}", self.name);
        }
    }
}

/// Joins `a` and `b` with a veth pair and gives the ends addresses (`"198.51.100.1/24"`). The
/// pair lives only inside the two namespaces and goes when either is deleted.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Result<()> {
    let base = unique("v");
    let (end_a, end_b) = (format!("{base}a"), format!("{base}b"));
    run(
        "ip",
        &[
            "link", "add", &end_a, "netns", &a.name, "type", "veth", "peer", "name", &end_b,
            "netns", &b.name,
        ],
    )?;
    for (ns, end, addr) in [(a, &end_a, a_addr), (b, &end_b, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", end])?;
        ns.ip(&["link", "set", end, "up"])?;
    }
    Ok(())
}

/// The local ports of the sockets in table `proto` (`tcp`, `tcp6`, `udp`, `udp6`) of process
/// `pid`'s namespace: TCP listeners only, every UDP socket. One entry per socket.
pub fn bound_ports(pid: u32, proto: &str) -> Vec<u16> {
    let table = read_lossy(Path::new(&format!("/proc/{pid}/net/{proto}")));
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if proto.starts_with("tcp") && state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// A process running in a namespace; killed on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    label: String,
    log: PathBuf,
}

impl NsProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the namespace has TCP listeners on `tcp` and UDP sockets on `udp`.
    pub fn wait_listening(&mut self, tcp: &[u16], udp: &[u16], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return Err(Error::new(format!(
                    "{} exited before listening:\n{}",
                    self.label,
                    tail(&self.log(), 20)
                )));
            }
            let (t, u) = (
                bound_ports(self.pid(), "tcp"),
                bound_ports(self.pid(), "udp"),
            );
            if tcp.iter().all(|p| t.contains(p)) && udp.iter().all(|p| u.contains(p)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{} not listening on TCP {tcp:?} and UDP {udp:?} within {timeout:?} (TCP \
                     {t:?}, UDP {u:?}):\n{}",
                    self.label,
                    tail(&self.log(), 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Boots the guest of `opts` under QEMU inside `ns` and returns at once (after waiting for a
/// free slot); see [`SlottedGuest::wait`].
pub fn spawn_guest(ns: &Netns, opts: &GuestOpts) -> Result<SlottedGuest> {
    let slot = SlotGuard::acquire();
    Ok(SlottedGuest {
        guest: spawn_in(Some(&ns.name), opts)?,
        _slot: slot,
    })
}

/// [`spawn_guest`], then [`SlottedGuest::wait`].
pub fn boot_in(ns: &Netns, opts: &GuestOpts) -> Result<GuestRun> {
    let run = spawn_guest(ns, opts)?.wait()?;
    eprintln!("vnu-tests: guest `{}` ran in {:.1?}", run.name, run.elapsed);
    Ok(run)
}

/// How many file descriptors process `pid` has open (`/proc/PID/fd`).
pub fn fd_count(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .map(Iterator::count)
        .map_err(|e| Error::new(format!("reading {dir}: {e}")))
}

/// A process's memory, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set: heap and stacks, mapped files, and the shared guest memory it touched.
    pub rss_kib: u64,
    /// Resident anonymous private memory: heap and stacks (what a leak grows).
    pub anon_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| Error::new(format!("reading {path}: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::new(format!("no {name} in {path}")))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
    })
}
