//! Harness for the end-to-end tests: real QEMU guests behind the backend (or behind QEMU slirp,
//! for reference).
//!
//! # Theory of operation
//!
//! The guest is a Debian kernel with a busybox initramfs built by `scripts/build-guest.sh` (once
//! per process, cached on disk). At boot it runs DHCP, checks its gateway, prints what it sees as
//! `key=value` lines between `=== VNU-GUEST BEGIN` and `=== VNU-GUEST END`, runs an optional shell
//! script whose output lines come back prefixed `run: `, and powers off. A boot is one QEMU
//! process (TCG, about 10 s of one core): its serial console goes to a file, parsed when QEMU
//! exits into a [`GuestRun`].
//!
//! [`Backend`] runs `vhost-net-user --socket-path DIR/vu.sock ARGS...` (the vhost-user ring
//! link) or `vhost-net-user --stream DIR/vu.sock ARGS...` (the stream link, QEMU `-netdev
//! stream`), as its [`Link`] says, with its stderr in a file, and waits for the socket;
//! [`Backend::net`] is the QEMU network for either link. [`boot`] takes a [`GuestOpts`] (the
//! network, the script, ...) and returns the parsed run. Every child process is killed when its
//! owner is dropped, and every boot is bounded by a timeout, so a failing test never leaves QEMU
//! or a backend behind.
//!
//! Cargo runs the test functions of a binary in parallel threads. [`boot`] holds one of a fixed
//! number of slots (`VNU_E2E_JOBS`, default: the number of CPUs) for the life of its QEMU, so
//! parallel tests queue rather than starve each other's timeouts; [`boot_all`] boots several
//! guests at once from one test.
//!
//! Environment: `VNU_BIN` (the backend binary), `VNU_QEMU` (the QEMU binary),
//! `VNU_GUEST_CACHE` (the guest build), `VNU_BOOT_TIMEOUT` (seconds per boot, default 180),
//! `VNU_E2E_JOBS`, `VNU_KEEP_TMP=1` (keep temp dirs: consoles, logs, sockets),
//! `VNU_E2E_ALLOW_SKIP=1` (let tests pass when QEMU is missing instead of failing).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
pub mod hostsrv;
pub mod netns;

/// The MAC the test guest gets unless told otherwise (the one the slirp measurements used).
pub const GUEST_MAC: &str = "52:54:00:41:2c:49";

/// Marks the start of what the guest reports.
pub const BEGIN_MARKER: &str = "=== VNU-GUEST BEGIN";
/// Marks the end of what the guest reports; a run without it did not finish.
pub const END_MARKER: &str = "=== VNU-GUEST END";

/// The kernel command line holds 2048 bytes; base64 scripts longer than this go through fw_cfg.
const MAX_CMDLINE_SCRIPT: usize = 1500;

/// The guest-visible IPv4 environment: the keys compared between backends.
pub const IPV4_KEYS: &[&str] = &[
    "dhcp.status",
    "dhcp.ip",
    "dhcp.mask",
    "dhcp.subnet",
    "dhcp.router",
    "dhcp.dns",
    "dhcp.lease",
    "dhcp.serverid",
    "dhcp.mtu",
    "dhcp.domain",
    "dhcp.search",
    "dhcp.hostname",
    "dhcp.siaddr",
    "dhcp.broadcast",
    "dhcp.boot_file",
    "guest.carrier",
    "guest.mtu",
    "guest.addr",
    "guest.gw",
    "guest.gw_ping",
    "guest.gw_mac",
    "guest.route",
    "guest.resolv_ns",
];

/// The guest-visible IPv6 environment (SLAAC address, default route). Needs a `v6wait` long
/// enough for a router advertisement (slirp's arrives about 2.5 s after the link comes up).
pub const IPV6_KEYS: &[&str] = &["guest.addr6", "guest.route6"];

/// What QEMU slirp (`-netdev user`, libslirp 4.7, QEMU 7.2) shows the test guest, as measured.
/// The backend's default environment must be the same.
pub const SLIRP_DEFAULT_V4: &[(&str, &str)] = &[
    ("dhcp.status", "bound"),
    ("dhcp.ip", "10.0.2.15"),
    ("dhcp.mask", "24"),
    ("dhcp.subnet", "255.255.255.0"),
    ("dhcp.router", "10.0.2.2"),
    ("dhcp.dns", "10.0.2.3"),
    ("dhcp.lease", "86400"),
    ("dhcp.serverid", "10.0.2.2"),
    ("dhcp.siaddr", "10.0.2.2"),
    ("dhcp.mtu", ""),
    ("dhcp.domain", ""),
    ("dhcp.search", ""),
    ("dhcp.hostname", ""),
    ("guest.addr", "10.0.2.15/24"),
    ("guest.gw", "10.0.2.2"),
    ("guest.gw_ping", "ok"),
    ("guest.gw_mac", "52:55:0a:00:02:02"),
    ("guest.mtu", "1500"),
];

/// slirp's default IPv6 environment as the test guest sees it (MAC 52:54:00:41:2c:49).
pub const SLIRP_DEFAULT_V6: &[(&str, &str)] = &[
    ("guest.addr6", "fec0::5054:ff:fe41:2c49/64"),
    ("guest.route6", "default via fe80::2 dev eth0"),
];

/// A harness failure, with everything needed to see why (console tails, logs).
/// `Debug` prints the same text as `Display`, so `.unwrap()` and `.expect()` stay readable.
pub struct Error(String);

impl Error {
    fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The backend binary: `VNU_BIN`, else `target/release/vhost-net-user`, else
/// `target/debug/vhost-net-user`.
pub fn backend_bin() -> Result<PathBuf> {
    static ANNOUNCED: OnceLock<()> = OnceLock::new();
    let path = if let Some(bin) = env_nonempty("VNU_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(Error::new(format!(
                "VNU_BIN={} is not a file",
                bin.display()
            )));
        }
        bin
    } else {
        let target = target_dir();
        let candidates = [
            target.join("release/vhost-net-user"),
            target.join("debug/vhost-net-user"),
        ];
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => p.clone(),
            None => {
                return Err(Error::new(format!(
                    "no backend binary at {} or {}: run `cargo build --release -p vhost-net-user` \
                     (or set VNU_BIN)",
                    candidates[0].display(),
                    candidates[1].display()
                )));
            }
        }
    };
    ANNOUNCED.get_or_init(|| eprintln!("vnu-tests: backend binary {}", path.display()));
    Ok(path)
}

/// The QEMU binary: `VNU_QEMU`, else `qemu-system-x86_64`.
pub fn qemu_bin() -> String {
    env_nonempty("VNU_QEMU").unwrap_or_else(|| "qemu-system-x86_64".to_owned())
}

/// Finds `name` (or a path) as an executable, like `command -v`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// Reports a test that cannot run here. Fails the test (panics) unless `VNU_E2E_ALLOW_SKIP=1`,
/// so CI never passes without running the end-to-end tests; returns `false` when skipping is
/// allowed (the test then returns early).
pub fn skip(reason: &str) -> bool {
    eprintln!("SKIP: {reason}");
    if std::env::var("VNU_E2E_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIP allowed by VNU_E2E_ALLOW_SKIP=1: this test did not run");
        false
    } else {
        panic!(
            "cannot run end-to-end test: {reason} (set VNU_E2E_ALLOW_SKIP=1 to skip instead of \
             failing)"
        );
    }
}

/// Whether a QEMU-booting test can run: QEMU must be installed. Use as
/// `if !vnu_tests::e2e_ready() { return; }` (see [`skip`]).
pub fn e2e_ready() -> bool {
    let qemu = qemu_bin();
    if find_program(&qemu).is_none() {
        return skip(&format!(
            "{qemu} not found (apt-get install qemu-system-x86, or run scripts/test.sh)"
        ));
    }
    true
}

/// Whether `program` is installed; if not, reports the skip like [`e2e_ready`].
pub fn require_program(program: &str, package: &str) -> bool {
    if find_program(program).is_some() {
        return true;
    }
    skip(&format!(
        "{program} not found (apt-get install {package}, or run scripts/test.sh)"
    ))
}

/// A directory under the system temp dir, removed on drop (kept with `VNU_KEEP_TMP=1`).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Result<TempDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Short: the vhost-user socket inside must fit in sockaddr_un (108 bytes).
        let path = std::env::temp_dir().join(format!("vnu-{label}.{}.{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::new(format!("creating {}: {e}", path.display())))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("VNU_KEEP_TMP").as_deref() == Ok("1") {
            eprintln!("vnu-tests: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The built guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Where `scripts/build-guest.sh` keeps the guest: `VNU_GUEST_CACHE`, else /var/tmp/vnu-guest.
pub fn guest_cache() -> PathBuf {
    env_nonempty("VNU_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/vnu-guest"))
}

/// Builds the guest with `scripts/build-guest.sh` (the first call in a process; quick when the
/// cache is current) and returns it.
pub fn guest_image() -> Result<GuestImage> {
    static IMAGE: OnceLock<std::result::Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let cache = guest_cache();
            let script = workspace_root().join("scripts/build-guest.sh");
            let started = Instant::now();
            let out = Command::new("bash")
                .arg(&script)
                .env("VNU_GUEST_CACHE", &cache)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let took = started.elapsed();
            if took > Duration::from_secs(2) {
                eprintln!("vnu-tests: built the guest in {took:.1?}");
            }
            Ok(GuestImage {
                kernel: cache.join("vmlinuz"),
                initrd: cache.join("initrd.gz"),
            })
        })
        .clone()
        .map_err(Error)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Sends `signal` to process `pid`; a process already gone is no error to the caller.
pub(crate) fn send_signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// How a backend run to its end ([`run_backend_to_exit`]) ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: still running after the timeout, and killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the backend binary with `args` until it exits, killing it after `timeout`: for
/// configurations it must refuse at startup (one that accepted them would serve forever).
pub fn run_backend_to_exit(args: &[&str], timeout: Duration) -> Result<Finished> {
    let bin = backend_bin()?;
    let dir = TempDir::new("backend-run")?;
    let (stdout, stderr) = (dir.join("out"), dir.join("err"));
    let file = |path: &Path| File::create(path).map_err(|e| Error::new(format!("{e}")));
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&stdout)?)
        .stderr(file(&stderr)?)
        .spawn()
        .map_err(|e| Error::new(format!("starting {}: {e}", bin.display())))?;
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
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
        // Started as root (as the tests run), the backend drops to nobody; the socket and files
        // it removes at exit can go only from a directory that user may write.
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
        let mut command = match ns {
            Some(ns) => ns.command(&bin),
            None => Command::new(&bin),
        };
        let child = command
            .arg(socket_flag)
            .arg(&socket)
            .args(args)
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

/// The guest's network: which `-netdev` (always `id=n0`) the virtio-net device uses.
#[derive(Debug, Clone)]
pub enum Net {
    /// QEMU slirp: `-netdev user,id=n0[,OPTS]`.
    User(String),
    /// A vhost-user backend: shared memfd guest memory, `-chardev socket` (with `reconnect=1`
    /// if asked), `-netdev vhost-user`, and `vectors=0` on the device (QEMU 7.2 under TCG
    /// crashes when a vhost-user net device uses MSI-X).
    VhostUser { socket: PathBuf, reconnect: bool },
    /// Any other netdev: `args` must define `id=n0`.
    Raw {
        args: Vec<String>,
        shared_memory: bool,
        vectors: Option<u32>,
    },
}

impl Net {
    /// QEMU slirp with its defaults.
    pub fn slirp() -> Net {
        Net::User(String::new())
    }

    /// QEMU slirp with `-netdev user` options (e.g. `net=169.254.0.0/16`).
    pub fn slirp_with(opts: &str) -> Net {
        Net::User(opts.to_owned())
    }
}

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestOpts {
    pub net: Net,
    /// Shell script run in the guest after the network checks; its output comes back as
    /// [`GuestRun::run`] lines.
    pub script: Option<String>,
    pub mac: String,
    /// Seconds the guest waits for a SLAAC address (0: don't wait).
    pub v6wait: u32,
    pub timeout: Duration,
    /// A name for messages (`slirp`, `ours`, ...).
    pub name: String,
    /// Extra `-device virtio-net-pci` properties, e.g. `csum=off,guest_tso4=off`.
    pub device_opts: String,
    /// Boot from the network (QEMU's iPXE ROM, `-boot n`) rather than from `-kernel`: the
    /// kernel, initrd and command line come from the boot file the DHCP server names (see
    /// [`network_boot_files`]).
    pub network_boot: bool,
}

impl GuestOpts {
    pub fn new(name: &str, net: Net) -> GuestOpts {
        let timeout = env_nonempty("VNU_BOOT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(180);
        GuestOpts {
            net,
            script: None,
            mac: GUEST_MAC.to_owned(),
            v6wait: 0,
            timeout: Duration::from_secs(timeout),
            name: name.to_owned(),
            device_opts: String::new(),
            network_boot: false,
        }
    }

    /// Boots through the virtio-net device's iPXE ROM instead of `-kernel`.
    pub fn network_boot(mut self) -> Self {
        self.network_boot = true;
        self
    }

    pub fn script(mut self, script: &str) -> Self {
        self.script = Some(script.to_owned());
        self
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_owned();
        self
    }

    /// Extra properties for the virtio-net device (offloads off, ...).
    pub fn device_opts(mut self, opts: &str) -> Self {
        self.device_opts = opts.to_owned();
        self
    }

    pub fn v6wait(mut self, seconds: u32) -> Self {
        self.v6wait = seconds;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The QEMU command line (without the binary) for this guest; `dir` holds the console log
    /// and a long script. `scripts/boot-guest.sh` builds the same command line: keep them alike.
    pub fn qemu_args(&self, image: &GuestImage, dir: &Path) -> Result<Vec<String>> {
        let mut args: Vec<String> = ["-accel", "tcg", "-m", "512", "-smp", "1"]
            .map(String::from)
            .to_vec();
        let (shared_memory, vectors) = match &self.net {
            Net::User(_) => (false, None),
            Net::VhostUser { .. } => (true, Some(0)),
            Net::Raw {
                shared_memory,
                vectors,
                ..
            } => (*shared_memory, *vectors),
        };
        if shared_memory {
            args.extend(
                [
                    "-object",
                    "memory-backend-memfd,id=mem0,size=512M,share=on",
                    "-machine",
                    "memory-backend=mem0",
                ]
                .map(String::from),
            );
        }
        let console = dir.join("console.log");
        args.extend(["-nodefaults", "-no-reboot", "-display", "none", "-serial"].map(String::from));
        args.push(format!("file:{}", console.display()));
        if self.network_boot {
            args.extend(["-boot", "n"].map(String::from));
        } else {
            args.push("-kernel".into());
            args.push(image.kernel.display().to_string());
            args.push("-initrd".into());
            args.push(image.initrd.display().to_string());
        }
        let mut append = kernel_cmdline(self.v6wait);
        if let Some(script) = &self.script {
            let encoded = base64(script.as_bytes());
            // A network-booted kernel's command line is the boot file's: fw_cfg it is.
            if encoded.len() <= MAX_CMDLINE_SCRIPT && !self.network_boot {
                append.push_str(" vnu.run=");
                append.push_str(&encoded);
            } else {
                let file = dir.join("run.b64");
                std::fs::write(&file, encoded)
                    .map_err(|e| Error::new(format!("writing {}: {e}", file.display())))?;
                args.push("-fw_cfg".into());
                args.push(format!("name=opt/vnu/run,file={}", file.display()));
            }
        }
        if !self.network_boot {
            args.push("-append".into());
            args.push(append);
        }
        match &self.net {
            Net::User(opts) => {
                args.push("-netdev".into());
                args.push(if opts.is_empty() {
                    "user,id=n0".to_owned()
                } else {
                    format!("user,id=n0,{opts}")
                });
            }
            Net::VhostUser { socket, reconnect } => {
                args.push("-chardev".into());
                args.push(format!(
                    "socket,id=c0,path={}{}",
                    socket.display(),
                    if *reconnect { ",reconnect=1" } else { "" }
                ));
                args.push("-netdev".into());
                args.push("vhost-user,id=n0,chardev=c0".into());
            }
            Net::Raw { args: raw, .. } => args.extend(raw.iter().cloned()),
        }
        args.push("-device".into());
        // No option ROM (it only slows the boot) unless the guest boots through it.
        let mut device = format!("virtio-net-pci,netdev=n0,mac={}", self.mac);
        if !self.network_boot {
            device.push_str(",romfile=");
        }
        if let Some(v) = vectors {
            device.push_str(&format!(",vectors={v}"));
        }
        if !self.device_opts.is_empty() {
            device.push(',');
            device.push_str(&self.device_opts);
        }
        args.push(device);
        Ok(args)
    }
}

/// The test guest's kernel command line.
fn kernel_cmdline(v6wait: u32) -> String {
    format!("console=ttyS0 quiet loglevel=1 panic=-1 vnu.v6wait={v6wait}")
}

/// Puts the test guest into `dir` for a network boot: `vmlinuz` and `initrd.gz` (copies of the
/// cached image: the backend serves nothing from outside its TFTP root, links included) and
/// `boot.ipxe`, an iPXE script that fetches both by TFTP from `server` and
/// boots them with the usual command line. Serve `dir` with `tftp=DIR,bootfile=boot.ipxe`.
pub fn network_boot_files(dir: &Path, server: &str, v6wait: u32) -> Result<()> {
    let image = guest_image()?;
    let io =
        |what: &str, e: std::io::Error| Error::new(format!("{what} in {}: {e}", dir.display()));
    for (name, target) in [("vmlinuz", &image.kernel), ("initrd.gz", &image.initrd)] {
        let copy = dir.join(name);
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(target, &copy).map_err(|e| io(name, e))?;
    }
    let script = format!(
        "#!ipxe\nkernel tftp://{server}/vmlinuz {}\ninitrd tftp://{server}/initrd.gz\nboot\n",
        kernel_cmdline(v6wait)
    );
    std::fs::write(dir.join("boot.ipxe"), script).map_err(|e| io("boot.ipxe", e))
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

/// A counting semaphore limiting how many QEMUs [`boot`] runs at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = env_nonempty("VNU_E2E_JOBS")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    })
}

#[derive(Debug)]
struct SlotGuard;

impl SlotGuard {
    fn acquire() -> SlotGuard {
        let s = slots();
        let mut free = s.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = s.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let s = slots();
        *s.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        s.freed.notify_one();
    }
}

/// A QEMU running the guest; killed on drop. From [`spawn`]; [`RunningGuest::wait`] gives the
/// result.
#[derive(Debug)]
pub struct RunningGuest {
    child: Child,
    dir: TempDir,
    started: Instant,
    timeout: Duration,
    name: String,
    command: String,
}

/// Starts QEMU for `opts` and returns at once. Unlike [`boot`] this takes no slot: mind the
/// number of QEMUs you run at once.
pub fn spawn(opts: &GuestOpts) -> Result<RunningGuest> {
    let image = guest_image()?;
    let dir = TempDir::new(&format!("guest-{}", sanitize(&opts.name)))?;
    let args = opts.qemu_args(&image, dir.path())?;
    let qemu = qemu_bin();
    let command = format!("{qemu} {}", args.join(" "));
    std::fs::write(dir.join("command"), &command).ok();
    let log = File::create(dir.join("qemu.log")).map_err(|e| Error::new(format!("{e}")))?;
    let log2 = log.try_clone().map_err(|e| Error::new(format!("{e}")))?;
    let child = Command::new(&qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| Error::new(format!("starting {qemu}: {e}")))?;
    Ok(RunningGuest {
        child,
        dir,
        started: Instant::now(),
        timeout: opts.timeout,
        name: opts.name.clone(),
        command,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect()
}

impl RunningGuest {
    /// Waits for the guest to power off (up to the timeout counted from [`spawn`]) and parses
    /// what it printed. An error when QEMU was killed for the timeout, or when the guest never
    /// printed its END marker; the error has the console's tail and QEMU's messages.
    pub fn wait(mut self) -> Result<GuestRun> {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        let status = wait_timeout(&mut self.child, left);
        let elapsed = self.started.elapsed();
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let console = self.console();
        let qemu_log = read_lossy(&self.dir.join("qemu.log"));
        let run = GuestRun::parse(&self.name, &console, &qemu_log, elapsed);
        let failure = match status {
            None => Some(format!("timed out after {:.0?}", self.timeout)),
            Some(s) if !run.completed => {
                Some(format!("QEMU exited ({s}) before the guest's END marker"))
            }
            Some(_) => None,
        };
        match failure {
            None => Ok(run),
            Some(why) => Err(Error::new(format!(
                "guest `{}`: {why}\ncommand: {}\nQEMU said:\n{}\nconsole (last 40 lines):\n{}",
                self.name,
                self.command,
                tail(&qemu_log, 20),
                tail(&console, 40)
            ))),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a console line is exactly `line` (e.g. `run: mark=start`, printed by the
    /// guest script). An error, with the console's tail, if QEMU exits first or after `timeout`.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console().lines().any(|l| l == line) {
                return Ok(());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                return Err(Error::new(format!(
                    "guest `{}`: no console line `{line}` {}\nconsole (last 30 lines):\n{}",
                    self.name,
                    if exited {
                        "before QEMU exited".to_owned()
                    } else {
                        format!("within {timeout:?}")
                    },
                    tail(&self.console(), 30)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        read_lossy(&self.dir.join("console.log")).replace('\r', "")
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A [`RunningGuest`] holding one of the `VNU_E2E_JOBS` slots while it runs (as [`boot`]
/// does), for tests that act on the host while the guest works: from [`spawn_slotted`], or
/// [`netns::spawn_guest`] inside a namespace. Killed on drop.
pub struct SlottedGuest {
    // Declared first so that it drops first: QEMU is killed before the slot is given back.
    pub(crate) guest: RunningGuest,
    pub(crate) _slot: SlotGuard,
}

impl fmt::Debug for SlottedGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlottedGuest")
            .field("pid", &self.guest.pid())
            .field("name", &self.guest.name)
            .field("dir", &self.guest.dir)
            .finish_non_exhaustive()
    }
}

impl SlottedGuest {
    pub fn pid(&self) -> u32 {
        self.guest.pid()
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        self.guest.console()
    }

    /// See [`RunningGuest::wait_for_line`].
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        self.guest.wait_for_line(line, timeout)
    }

    /// Waits for the guest to power off and parses what it printed, as
    /// [`RunningGuest::wait`] does.
    pub fn wait(self) -> Result<GuestRun> {
        self.guest.wait()
    }
}

/// Waits for a free slot, then [`spawn`]s the guest of `opts`.
pub fn spawn_slotted(opts: &GuestOpts) -> Result<SlottedGuest> {
    let slot = SlotGuard::acquire();
    Ok(SlottedGuest {
        guest: spawn(opts)?,
        _slot: slot,
    })
}

/// Boots the QEMU slirp guest of an "as in slirp" test: the reference, which must print
/// `expected` for the comparison to mean anything. QEMU's slirp has its own bad moments on a
/// loaded machine (one CI run's slirp guest timed out on a TFTP fetch over IPv6), so a
/// reference that prints otherwise boots once more; the second run is the reference either way.
pub fn boot_reference(opts: &GuestOpts, expected: &[String]) -> Result<GuestRun> {
    let run = boot(opts)?;
    if run.run == expected {
        return Ok(run);
    }
    eprintln!(
        "vnu-tests: the slirp reference `{}` printed otherwise than expected; booting it again. \
         It printed:\n{}",
        opts.name,
        run.run.join("\n")
    );
    boot(opts)
}

/// Boots `ours` (a guest behind `backend`) while `slirp_reference` boots or returns the same
/// script's run behind QEMU slirp (once per process), and asserts that slirp's guest printed
/// `expected` and ours printed the same: the check of every "as in slirp" test.
pub fn assert_runs_as_slirp(
    slirp_reference: fn() -> &'static GuestRun,
    expected: &[String],
    ours: &GuestOpts,
    backend: &Backend,
) {
    let (slirp, run) = std::thread::scope(|s| {
        let slirp = s.spawn(slirp_reference);
        let run = boot(ours);
        (slirp.join().expect("slirp reference thread"), run)
    });
    let context = format!("backend log:\n{}", tail(&backend.log(), 40));
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    assert_eq!(
        slirp.run,
        expected,
        "QEMU slirp's guest (the reference) did not print what the test expects:\n{}",
        slirp.report()
    );
    assert_eq!(
        run.run,
        slirp.run,
        "behind the backend the guest saw otherwise than behind slirp:\n{}\n{context}",
        run.report()
    );
}

/// Boots a guest and waits for it to power off: holds one of the `VNU_E2E_JOBS` slots while
/// QEMU runs (the timeout counts from when QEMU starts, not while queued).
pub fn boot(opts: &GuestOpts) -> Result<GuestRun> {
    let _slot = SlotGuard::acquire();
    let run = spawn(opts)?.wait()?;
    eprintln!(
        "vnu-tests: guest `{}` ran in {:.1?} (DHCP bound at {} s guest uptime)",
        run.name,
        run.elapsed,
        run.get("guest.uptime_bound").unwrap_or("-")
    );
    Ok(run)
}

/// Boots several guests at once (each through [`boot`], so within the slot limit); the results
/// are in the order of `opts`.
pub fn boot_all(opts: &[GuestOpts]) -> Vec<Result<GuestRun>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = opts.iter().map(|o| s.spawn(move || boot(o))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new("boot thread panicked")))
            })
            .collect()
    })
}

/// What one guest reported.
#[derive(Debug, Clone)]
pub struct GuestRun {
    pub name: String,
    /// `key=value` lines in order of appearance; a key may repeat (`guest.route`).
    pub keys: BTreeMap<String, Vec<String>>,
    /// The script's output lines, without the `run: ` prefix.
    pub run: Vec<String>,
    /// The whole serial console (kernel messages included).
    pub console: String,
    /// QEMU's own stdout/stderr (warnings).
    pub qemu_log: String,
    /// Whether the guest reached its END marker.
    pub completed: bool,
    /// From QEMU start to exit.
    pub elapsed: Duration,
}

impl GuestRun {
    /// Parses a console: the lines between the markers are `key=value` lines (keys like
    /// `dhcp.ip`) and `run: ` lines; anything else (kernel messages) is ignored.
    pub fn parse(name: &str, console: &str, qemu_log: &str, elapsed: Duration) -> GuestRun {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut run = Vec::new();
        let mut inside = false;
        let mut completed = false;
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with(BEGIN_MARKER) {
                inside = true;
                continue;
            }
            if !inside {
                continue;
            }
            if line.starts_with(END_MARKER) {
                completed = true;
                break;
            }
            if let Some(rest) = line.strip_prefix("run:") {
                run.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            } else if let Some((k, v)) = line.split_once('=') {
                let is_key = k.contains('.')
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
                if is_key {
                    keys.entry(k.to_owned())
                        .or_default()
                        .push(v.trim_end().to_owned());
                }
            }
        }
        GuestRun {
            name: name.to_owned(),
            keys,
            run,
            console: console.to_owned(),
            qemu_log: qemu_log.to_owned(),
            completed,
            elapsed,
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of `key` (empty if absent).
    pub fn all(&self, key: &str) -> &[String] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// All values of `key` joined with " | ", or `<absent>`: for comparisons and messages.
    pub fn value(&self, key: &str) -> String {
        match self.keys.get(key) {
            Some(v) => v.join(" | "),
            None => "<absent>".to_owned(),
        }
    }

    /// The exit status of the guest script, if one ran.
    pub fn run_status(&self) -> Option<i32> {
        self.get("guest.run_status").and_then(|s| s.parse().ok())
    }

    /// Every reported line, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (k, vs) in &self.keys {
            for v in vs {
                out.push_str(&format!("  {k}={v}\n"));
            }
        }
        for line in &self.run {
            out.push_str(&format!("  run: {line}\n"));
        }
        out
    }

    /// The keys among `expected` whose value differs, as "key: want X, got Y" lines.
    pub fn mismatches(&self, expected: &[(&str, &str)]) -> Vec<String> {
        expected
            .iter()
            .filter(|(k, want)| self.value(k) != *want)
            .map(|(k, want)| format!("{k}: want {want:?}, got {:?}", self.value(k)))
            .collect()
    }

    /// Panics unless every key of `expected` has that value; the message lists the mismatches,
    /// the whole report and `context` (e.g. the backend's log).
    pub fn assert_values(&self, expected: &[(&str, &str)], context: &str) {
        let bad = self.mismatches(expected);
        assert!(
            bad.is_empty(),
            "guest `{}` differs from what was expected:\n  {}\nguest report:\n{}{}",
            self.name,
            bad.join("\n  "),
            self.report(),
            context
        );
    }
}

/// Where two runs differ among `keys`: (key, value in `a`, value in `b`).
pub fn diff_keys(a: &GuestRun, b: &GuestRun, keys: &[&str]) -> Vec<(String, String, String)> {
    keys.iter()
        .filter_map(|k| {
            let (va, vb) = (a.value(k), b.value(k));
            (va != vb).then(|| (k.to_string(), va, vb))
        })
        .collect()
}

/// Panics unless `a` and `b` agree on every key of `keys`; the message is a table of the
/// differences, both reports and `context`.
pub fn assert_same_keys(a: &GuestRun, b: &GuestRun, keys: &[&str], context: &str) {
    let diff = diff_keys(a, b, keys);
    if diff.is_empty() {
        return;
    }
    let table: Vec<String> = diff
        .iter()
        .map(|(k, va, vb)| format!("  {k}: {}={va:?} {}={vb:?}", a.name, b.name))
        .collect();
    panic!(
        "guests `{}` and `{}` see different environments:\n{}\n`{}` report:\n{}`{}` report:\n{}{}",
        a.name,
        b.name,
        table.join("\n"),
        a.name,
        a.report(),
        b.name,
        b.report(),
        context
    );
}

/// Standard base64 with padding (for `vnu.run=`).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

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

    const CONSOLE: &str = "[    0.000000] noise\r\n\
        === VNU-GUEST BEGIN\r\n\
        guest.kernel=6.1.0-56-amd64\r\n\
        dhcp.ip=10.0.2.15\r\n\
        dhcp.mtu=\r\n\
        some kernel line\r\n\
        guest.route=default via 10.0.2.2 dev eth0\r\n\
        guest.route=10.0.2.0/24 dev eth0 scope link src 10.0.2.15\r\n\
        run: hello=world\r\n\
        run:\r\n\
        guest.run_status=3\r\n\
        === VNU-GUEST END\r\n\
        dhcp.ip=after-the-end\r\n";

    #[test]
    fn parses_keys_runs_and_markers() {
        let run = GuestRun::parse("t", CONSOLE, "", Duration::ZERO);
        assert!(run.completed);
        assert_eq!(run.get("dhcp.ip"), Some("10.0.2.15"));
        assert_eq!(run.get("dhcp.mtu"), Some(""));
        assert_eq!(run.value("dhcp.router"), "<absent>");
        assert_eq!(run.all("guest.route").len(), 2);
        assert_eq!(run.run, vec!["hello=world".to_owned(), String::new()]);
        assert_eq!(run.run_status(), Some(3));
        assert!(!run.keys.contains_key("some kernel line"));
    }

    #[test]
    fn unfinished_console_is_not_completed() {
        let run = GuestRun::parse(
            "t",
            "=== VNU-GUEST BEGIN\ndhcp.ip=1.2.3.4\n",
            "",
            Duration::ZERO,
        );
        assert!(!run.completed);
        assert_eq!(run.get("dhcp.ip"), Some("1.2.3.4"));
    }

    #[test]
    fn diff_reports_only_differing_keys() {
        let a = GuestRun::parse("a", CONSOLE, "", Duration::ZERO);
        let b = GuestRun::parse(
            "b",
            &CONSOLE.replace("dhcp.ip=10.0.2.15", "dhcp.ip=10.0.2.16"),
            "",
            Duration::ZERO,
        );
        let d = diff_keys(&a, &b, &["dhcp.ip", "dhcp.mtu", "guest.route"]);
        assert_eq!(
            d,
            vec![("dhcp.ip".into(), "10.0.2.15".into(), "10.0.2.16".into())]
        );
    }

    #[test]
    fn vhost_user_guests_get_shared_memory_and_no_msix() {
        let image = GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let net = Net::VhostUser {
            socket: "/tmp/s".into(),
            reconnect: true,
        };
        let args = GuestOpts::new("t", net)
            .script("echo hi")
            .qemu_args(&image, Path::new("/tmp"))
            .unwrap()
            .join(" ");
        assert!(args.contains("-accel tcg"), "{args}");
        assert!(
            args.contains("memory-backend-memfd,id=mem0,size=512M,share=on"),
            "{args}"
        );
        assert!(args.contains("-machine memory-backend=mem0"), "{args}");
        assert!(
            args.contains("socket,id=c0,path=/tmp/s,reconnect=1"),
            "{args}"
        );
        assert!(args.contains("vhost-user,id=n0,chardev=c0"), "{args}");
        assert!(args.contains(",romfile=,vectors=0"), "{args}");
        assert!(
            args.contains(&format!("vnu.run={}", base64(b"echo hi"))),
            "{args}"
        );

        let slirp = GuestOpts::new("t", Net::slirp_with("net=169.254.0.0/16"))
            .qemu_args(&image, Path::new("/tmp"))
            .unwrap()
            .join(" ");
        assert!(
            slirp.contains("-netdev user,id=n0,net=169.254.0.0/16"),
            "{slirp}"
        );
        assert!(!slirp.contains("vectors"), "{slirp}");
        assert!(!slirp.contains("memory-backend"), "{slirp}");
    }

    #[test]
    fn long_scripts_go_through_fw_cfg() {
        let dir = TempDir::new("unit").unwrap();
        let image = GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let script = "echo 0123456789\n".repeat(200);
        let args = GuestOpts::new("t", Net::slirp())
            .script(&script)
            .qemu_args(&image, dir.path())
            .unwrap()
            .join(" ");
        assert!(!args.contains("vnu.run="), "{args}");
        assert!(args.contains("name=opt/vnu/run,file="), "{args}");
        let stored = std::fs::read_to_string(dir.join("run.b64")).unwrap();
        assert_eq!(stored, base64(script.as_bytes()));
    }
}
