//! Benchmarks for vhost-net-user: the pieces of `guest-throughput` that are worth testing on
//! their own (iperf3 output, `/proc/PID/stat`, medians) and the host-side iperf3 server.
//!
//! # Theory of operation
//!
//! The guest runs one iperf3 client per test, each against its own one-off server
//! (`iperf3 -s -1`) on a free port of the host's 127.0.0.1, reached through the gateway address.
//! One port per test means parallel benchmarks never collide, and it lets the host see when each
//! test starts and ends without talking to the guest: the server prints `Accepted connection`
//! when the client connects and exits when the test is over. The host samples the CPU time of
//! the backend (and of QEMU) at those two moments, so CPU is charged to the test that used it,
//! not to the boot or to the other direction.

pub mod connrate;
pub mod echo;
pub mod procs;
pub mod profile;
pub mod svg;
pub mod synth;

use std::io::{BufRead, BufReader, Lines};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The address the guest uses for the host: QEMU slirp and the backend both map it to the host's
/// 127.0.0.1 (their default network, 10.0.2.0/24).
pub const GATEWAY: &str = "10.0.2.2";

/// Which way the payload goes; host→guest is iperf3's `-R` (the host side sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    GuestToHost,
    HostToGuest,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::GuestToHost, Direction::HostToGuest];

    pub fn label(self) -> &'static str {
        match self {
            Direction::GuestToHost => "guest→host",
            Direction::HostToGuest => "host→guest",
        }
    }

    /// The iperf3 client flags for this direction.
    pub fn client_flag(self) -> &'static str {
        match self {
            Direction::GuestToHost => "",
            Direction::HostToGuest => " -R",
        }
    }
}

/// One iperf3 summary line: the average rate and what was moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mbit_per_s: f64,
    pub bytes: u64,
    /// Whether this is the receiver's line (what arrived) rather than the sender's.
    pub receiver: bool,
    /// On the sender's line: segments its TCP retransmitted (losses, or a peer that dropped
    /// what it could not take).
    pub retransmits: Option<u64>,
    /// On a UDP line (iperf3 -u): datagrams lost and datagrams sent, the `LOST/TOTAL` column.
    pub lost: Option<(u64, u64)>,
}

impl Summary {
    /// Datagrams lost, in percent of those sent (UDP lines only).
    pub fn loss_percent(&self) -> Option<f64> {
        let (lost, total) = self.lost?;
        (total > 0).then(|| 100.0 * lost as f64 / total as f64)
    }
}

/// Where a benchmark's passt keeps its socket, pid file and log: a fresh directory under the
/// temp dir (the Debian 13 root shares /tmp at the same path), open to everyone because passt
/// drops to user `nobody`. Removed when dropped.
#[derive(Debug)]
pub struct PasstDir {
    pub dir: vnu_tests::TempDir,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

impl PasstDir {
    pub fn new() -> Result<PasstDir, String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = vnu_tests::TempDir::new("passt").map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        Ok(PasstDir {
            socket: dir.join("passt.sock"),
            pid_file: dir.join("passt.pid"),
            log: dir.join("passt.log"),
            dir,
        })
    }

    /// passt's pid, from its pid file, or `started` (the process we started: `ip netns exec`
    /// and debian13.sh exec their way to passt, so it is passt too).
    pub fn pid(&self, started: u32) -> u32 {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(started)
    }
}

/// passt's options in every benchmark: in the foreground, quiet, exiting on error, with its
/// socket and pid file, and slirp's addresses for the guest, so that the same guest (real or
/// synthetic) reaches 10.0.2.2, which passt maps to its namespace's loopback (passt 2025:
/// `--map-host-loopback` defaults to the gateway address).
pub fn passt_common_args(socket: &Path, pid_file: &Path) -> Vec<String> {
    [
        "-f",
        "-q",
        "-e",
        "-s",
        &socket.display().to_string(),
        "-P",
        &pid_file.display().to_string(),
        "-a",
        "10.0.2.15",
        "-n",
        "24",
        "-g",
        GATEWAY,
    ]
    .map(String::from)
    .to_vec()
}

/// Parses an iperf3 summary line run with `-f m`, e.g.
/// `[  5]   0.00-4.00   sec   263 MBytes   551 Mbits/sec    0             sender`.
/// The transfer column uses binary units (iperf3 prints bytes in KiB/MiB/GiB, rates in 10^6).
pub fn parse_summary(line: &str) -> Option<Summary> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let receiver = match *words.last()? {
        "receiver" => true,
        "sender" => false,
        _ => return None,
    };
    let rate = words.iter().position(|w| *w == "Mbits/sec")?;
    let mbit_per_s = words.get(rate.checked_sub(1)?)?.parse().ok()?;
    let unit = words.iter().position(|w| w.ends_with("Bytes"))?;
    let scale = match words[unit] {
        "Bytes" => 1.0,
        "KBytes" => 1024.0,
        "MBytes" => 1024.0 * 1024.0,
        "GBytes" => 1024.0 * 1024.0 * 1024.0,
        "TBytes" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let amount: f64 = words.get(unit.checked_sub(1)?)?.parse().ok()?;
    Some(Summary {
        mbit_per_s,
        bytes: (amount * scale) as u64,
        receiver,
        retransmits: words.get(rate + 1).and_then(|w| w.parse().ok()),
        lost: words.iter().find_map(|w| {
            let (lost, total) = w.split_once('/')?;
            Some((lost.parse().ok()?, total.parse().ok()?))
        }),
    })
}

/// What the guest reported for one test: its summaries and any error lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestOutput {
    pub sender: Option<Summary>,
    pub receiver: Option<Summary>,
    pub errors: Vec<String>,
}

/// Collects the guest script's `iperf K: LINE` lines (see `guest_script` in the binary) for
/// tests `0..tests`.
pub fn parse_guest_output(lines: &[String], tests: usize) -> Vec<TestOutput> {
    let mut out = vec![TestOutput::default(); tests];
    for line in lines {
        let Some((k, text)) = line
            .strip_prefix("iperf ")
            .and_then(|rest| rest.split_once(": "))
        else {
            continue;
        };
        let Some(test) = k.parse::<usize>().ok().and_then(|k| out.get_mut(k)) else {
            continue;
        };
        match parse_summary(text) {
            Some(s) if s.receiver => test.receiver = Some(s),
            Some(s) => test.sender = Some(s),
            None => test.errors.push(text.trim().to_owned()),
        }
    }
    out
}

/// utime + stime in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (utime, stime) = parse_stat_user_system(stat)?;
    Some(utime + stime)
}

/// utime and stime, apart, in clock ticks from the text of `/proc/PID/stat`: the system part
/// is what the kernel did in the process's system calls (and the softirqs they ran), which a
/// backend making the same calls as another cannot take below that other's. The command name
/// (field 2) may hold spaces and parentheses, so the fields are counted from its last `)`.
pub fn parse_stat_user_system(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// The kernel's clock tick (`getconf CLK_TCK`, almost always 100): the unit of `/proc/PID/stat`.
/// Asked of getconf because sysconf(3) would be this crate's only unsafe code.
pub fn clock_ticks_per_second() -> Result<u64, String> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("running getconf CLK_TCK: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| "getconf CLK_TCK printed no clock tick".to_owned())
}

/// The machine's CPU time taken by the hypervisor so far (the `steal` field of `/proc/stat`'s
/// `cpu` line, summed over CPUs), in clock ticks, and the number of CPUs it covers. On a shared
/// virtual machine this is what other tenants took: a run with much of it is a slow run.
pub fn steal_ticks() -> Option<(u64, usize)> {
    parse_steal(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// [`steal_ticks`] from the text of `/proc/stat`.
pub fn parse_steal(stat: &str) -> Option<(u64, usize)> {
    let total = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal ...
    let steal = total.split_whitespace().nth(8)?.parse().ok()?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((steal, cpus.max(1)))
}

/// CPU seconds (user + system, all threads) used so far by process `pid`; `None` once it is gone.
pub fn cpu_seconds(pid: u32, ticks_per_second: u64) -> Option<f64> {
    let (user, system) = cpu_seconds_user_system(pid, ticks_per_second)?;
    Some(user + system)
}

/// CPU seconds of process `pid` (all threads) so far, as (user, system); `None` once it is gone.
pub fn cpu_seconds_user_system(pid: u32, ticks_per_second: u64) -> Option<(f64, f64)> {
    stat_cpu_seconds_user_system(Path::new(&format!("/proc/{pid}/stat")), ticks_per_second)
}

/// User and system CPU seconds from one `stat` file of `/proc`, a process's or a thread's.
pub fn stat_cpu_seconds_user_system(stat: &Path, ticks_per_second: u64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(stat).ok()?;
    let (utime, stime) = parse_stat_user_system(&stat)?;
    let seconds = |t: u64| t as f64 / ticks_per_second as f64;
    Some((seconds(utime), seconds(stime)))
}

/// CPU seconds (user + system) from one `stat` file of `/proc`, a process's or a thread's.
pub fn stat_cpu_seconds(stat: &Path, ticks_per_second: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(stat).ok()?;
    Some(parse_stat_ticks(&stat)? as f64 / ticks_per_second as f64)
}

/// CPU seconds used so far by each thread of process `pid`, by thread id; empty once it is gone.
pub fn thread_cpu_seconds(pid: u32, ticks_per_second: u64) -> Vec<(u32, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            Some((
                tid,
                stat_cpu_seconds(&task.path().join("stat"), ticks_per_second)?,
            ))
        })
        .collect()
}

/// The most CPU seconds any one thread used between two [`thread_cpu_seconds`] samples.
pub fn busiest_thread(before: &[(u32, f64)], after: &[(u32, f64)]) -> Option<f64> {
    thread_rises(before, after).max_by(f64::total_cmp)
}

/// CPU seconds each thread seen in both samples used in between.
fn thread_rises<'a>(
    before: &'a [(u32, f64)],
    after: &'a [(u32, f64)],
) -> impl Iterator<Item = f64> + 'a {
    after.iter().filter_map(|&(tid, end)| {
        let &(_, start) = before.iter().find(|&&(t, _)| t == tid)?;
        Some(end - start)
    })
}

/// How many of the backend's threads a [`Window`] keeps.
pub const TOP_THREADS: usize = 4;

/// The CPU seconds of the [`TOP_THREADS`] busiest threads between two samples, busiest first
/// (0 where there are fewer threads): with several queue pairs, one worker thread each.
pub fn top_threads(before: &[(u32, f64)], after: &[(u32, f64)]) -> [f64; TOP_THREADS] {
    let mut rises: Vec<f64> = thread_rises(before, after).collect();
    rises.sort_by(|a, b| b.total_cmp(a));
    let mut top = [0.0; TOP_THREADS];
    for (slot, rise) in top.iter_mut().zip(rises) {
        *slot = rise;
    }
    top
}

/// The median (the mean of the middle two for an even count); `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Processes whose CPU time a test is charged with.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// The backend, when it is a process of its own (not for QEMU slirp).
    pub backend: Option<u32>,
    pub qemu: u32,
    pub ticks_per_second: u64,
}

/// What the host saw of one test: from the server's accept to its exit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub wall: Duration,
    pub backend_cpu: Option<f64>,
    /// The part of `backend_cpu` spent in the kernel (its system time).
    pub backend_kernel_cpu: Option<f64>,
    pub qemu_cpu: Option<f64>,
    /// CPU seconds of QEMU's busiest thread: under TCG with one vCPU, the vCPU thread (the
    /// main loop, which runs slirp and the stream link's socket, uses far less). Near the
    /// window's length, the guest itself was the bottleneck.
    pub vcpu_cpu: Option<f64>,
    /// CPU seconds of the backend's busiest threads, busiest first (see [`top_threads`]);
    /// `None` for a backend inside QEMU.
    pub backend_threads: Option<[f64; TOP_THREADS]>,
    /// Share of the machine's CPU time the hypervisor gave to others during the window, in
    /// percent (see [`steal_ticks`]).
    pub steal_percent: Option<f64>,
}

/// A one-off iperf3 server on 127.0.0.1 (nothing outside the machine can reach it); killed on
/// drop.
#[derive(Debug)]
pub struct IperfServer {
    child: Child,
    port: u16,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl IperfServer {
    /// Starts `iperf3 -s -1` on a free loopback port and waits until it listens. A port taken
    /// between choosing and binding (another benchmark, another test) makes iperf3 exit: then
    /// another port is tried.
    pub fn start() -> Result<IperfServer, String> {
        IperfServer::start_in(&[])
    }

    /// [`IperfServer::start`] with a command prefix, e.g. `ip netns exec NS` to serve the
    /// loopback of a network namespace. The port is chosen free on this namespace's loopback;
    /// a fresh namespace has them all free.
    pub fn start_in(prefix: &[String]) -> Result<IperfServer, String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free loopback port: {e}"))?
                .port();
            // iperf3 block-buffers its stdout on a pipe (even with --forceflush, which flushes
            // only at each interval report, a second after the accept): stdbuf makes the accept
            // line arrive when it happens.
            let server = [
                "stdbuf",
                "-oL",
                "iperf3",
                "-s",
                "-1",
                "-B",
                "127.0.0.1",
                "-p",
            ];
            let mut command: Vec<String> = prefix.to_vec();
            command.extend(server.map(String::from));
            command.push(port.to_string());
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting `stdbuf -oL iperf3 -s`: {e}"))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            let listening = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.starts_with("Server listening on"));
            if listening {
                return Ok(IperfServer {
                    child,
                    port,
                    lines: Some(lines),
                });
            }
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            last_error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        }
        Err(format!("iperf3 -s would not listen: {last_error}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Follows the server's output in a thread: samples CPU time when the client connects and
    /// when the server exits (see [`watch_window`]).
    pub fn watch(&mut self, procs: Watched) -> JoinHandle<Option<Window>> {
        watch_window(self.lines.take().expect("watch is called once"), procs)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Follows a test server's output in a thread: samples the CPU time of the backend and of QEMU
/// (and of their threads) at the server's first `Accepted connection` line and when its output
/// ends (the server exits once the test is over). The thread ends when the server does; killed
/// before the test started or finished, it gives `None`.
pub fn watch_window<R: BufRead + Send + 'static>(
    lines: Lines<R>,
    procs: Watched,
) -> JoinHandle<Option<Window>> {
    std::thread::spawn(move || {
        let sample = |pid: Option<u32>| pid.and_then(|p| cpu_seconds(p, procs.ticks_per_second));
        let split =
            |pid: Option<u32>| pid.and_then(|p| cpu_seconds_user_system(p, procs.ticks_per_second));
        let mut start = None;
        for line in lines.map_while(Result::ok) {
            if start.is_none() && line.starts_with("Accepted connection") {
                start = Some((
                    Instant::now(),
                    split(procs.backend),
                    sample(Some(procs.qemu)),
                    thread_cpu_seconds(procs.qemu, procs.ticks_per_second),
                    steal_ticks(),
                    procs
                        .backend
                        .map(|p| thread_cpu_seconds(p, procs.ticks_per_second)),
                ));
            }
        }
        let (began, backend0, qemu0, threads0, steal0, backend_threads0) = start?;
        let (backend1, qemu1) = (split(procs.backend), sample(Some(procs.qemu)));
        let backend_threads = backend_threads0.zip(procs.backend).map(|(before, p)| {
            top_threads(&before, &thread_cpu_seconds(p, procs.ticks_per_second))
        });
        let threads1 = thread_cpu_seconds(procs.qemu, procs.ticks_per_second);
        let steal1 = steal_ticks();
        let wall = began.elapsed();
        let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let steal_percent = match (steal0, steal1) {
            (Some((a, cpus)), Some((b, _))) if !wall.is_zero() => Some(
                100.0 * b.saturating_sub(a) as f64
                    / procs.ticks_per_second as f64
                    / (wall.as_secs_f64() * cpus as f64),
            ),
            _ => None,
        };
        Some(Window {
            wall,
            backend_cpu: used(
                backend0.map(|(user, system)| user + system),
                backend1.map(|(user, system)| user + system),
            ),
            backend_kernel_cpu: used(backend0.map(|(_, s)| s), backend1.map(|(_, s)| s)),
            qemu_cpu: used(qemu0, qemu1),
            vcpu_cpu: busiest_thread(&threads0, &threads1),
            backend_threads,
            steal_percent,
        })
    })
}

/// The first line of `program --version`, or why not.
fn version_line(program: &str) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .trim()
            .to_owned(),
        Err(e) => format!("{program}: {e}"),
    }
}

/// The machine, for the top of the report: numbers mean little without it.
pub fn machine_description(qemu: &str) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("?");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "machine   {nproc} CPUs, {model}, kernel {}\n\
         qemu      {}\n\
         iperf3    {}\n\
         load avg  {}",
        read("/proc/sys/kernel/osrelease").trim(),
        version_line(qemu),
        version_line("iperf3"),
        load_average()
    )
}

/// `path`, when it was built, and the checkout's commit: in a shared working tree the binary
/// changes under you, and a number means little without the build it came from.
pub fn binary_description(path: &Path) -> String {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let path_text = path.to_string_lossy();
    let built = output("date", &["-u", "-r", &path_text, "+%F %T UTC"]).unwrap_or("?".into());
    let root = vnu_tests::workspace_root();
    let root = root.to_string_lossy();
    let commit = output("git", &["-C", &root, "log", "-1", "--format=%h"]).unwrap_or("?".into());
    let dirty = output("git", &["-C", &root, "status", "--porcelain", "-uno"])
        .is_some_and(|s| !s.is_empty());
    format!(
        "{} (built {built}; checkout at {commit}{})",
        path.display(),
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    )
}

/// The 1, 5 and 15 minute load averages: says how busy the machine was (other work skews the
/// numbers).
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The backend under measurement: `VNU_BIN`, else the workspace's release build. Never a
/// debug build: benchmarking one by accident would be worse than failing.
pub fn release_backend() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("VNU_BIN").filter(|b| !b.is_empty()) {
        return Ok(bin.into());
    }
    let bin = vnu_tests::target_dir().join("release/vhost-net-user");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it first with `cargo build --release` (or set VNU_BIN)",
            bin.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_steal_from_the_cpu_line_and_counts_the_cpus() {
        let stat = "cpu  418020 0 30560 598096 686 0 7424 55954 0 0\n\
                    cpu0 209010 0 15280 299048 343 0 3712 27977 0 0\n\
                    cpu1 209010 0 15280 299048 343 0 3712 27977 0 0\n\
                    intr 1234 0\n\
                    cpufreq_ignored 1\n";
        assert_eq!(parse_steal(stat), Some((55954, 2)));
        assert_eq!(parse_steal("intr 1\n"), None);
    }

    #[test]
    fn parses_iperf_summaries() {
        let sender = "[  5]   0.00-4.00   sec   263 MBytes   551 Mbits/sec    0             sender";
        assert_eq!(
            parse_summary(sender),
            Some(Summary {
                mbit_per_s: 551.0,
                bytes: 263 * 1024 * 1024,
                receiver: false,
                retransmits: Some(0),
                lost: None,
            })
        );
        let receiver =
            "[  5]   0.00-4.04   sec  1.05 GBytes  2236 Mbits/sec                  receiver";
        let s = parse_summary(receiver).unwrap();
        assert!(s.receiver);
        assert_eq!(s.retransmits, None);
        assert_eq!(s.mbit_per_s, 2236.0);
        assert_eq!(s.bytes, (1.05 * 1024.0 * 1024.0 * 1024.0) as u64);
        assert_eq!(
            parse_summary("[  5]   1.00-2.00   sec  65.0 MBytes   545 Mbits/sec"),
            None
        );
        assert_eq!(parse_summary("iperf Done."), None);
        let udp = "[  5]   0.00-4.04   sec  98.5 MBytes   205 Mbits/sec  0.043 ms  \
                   1234/75000 (1.6%)  receiver";
        let s = parse_summary(udp).unwrap();
        assert_eq!(s.mbit_per_s, 205.0);
        assert_eq!(s.retransmits, None);
        assert_eq!(s.lost, Some((1234, 75000)));
        assert!((s.loss_percent().unwrap() - 1.645_333).abs() < 1e-3);
        let sum = "[SUM]   0.00-4.00   sec   300 MBytes   629 Mbits/sec  12   sender";
        assert_eq!(parse_summary(sum).unwrap().retransmits, Some(12));
    }

    #[test]
    fn collects_guest_output_by_test() {
        let lines: Vec<String> = [
            "guest noise",
            "iperf 0: [  5]   0.00-4.00   sec   263 MBytes   551 Mbits/sec    0   sender",
            "iperf 0: [  5]   0.00-4.04   sec   262 MBytes   545 Mbits/sec        receiver",
            "iperf 1: iperf3: error - unable to connect to server: Connection refused",
            "iperf 7: [  5]   0.00-4.04   sec   262 MBytes   545 Mbits/sec        receiver",
        ]
        .map(String::from)
        .to_vec();
        let out = parse_guest_output(&lines, 2);
        assert_eq!(out[0].receiver.unwrap().mbit_per_s, 545.0);
        assert_eq!(out[0].sender.unwrap().mbit_per_s, 551.0);
        assert!(out[0].errors.is_empty());
        assert_eq!(out[1].receiver, None);
        assert_eq!(
            out[1].errors,
            ["iperf3: error - unable to connect to server: Connection refused"]
        );
    }

    #[test]
    fn reads_cpu_ticks_past_an_awkward_command_name() {
        let stat = "4242 (vhost (net) user) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 37 0 0 20 0 3 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(187));
        assert_eq!(parse_stat_user_system(stat), Some((150, 37)));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn the_busiest_thread_is_the_largest_rise_among_threads_seen_twice() {
        let before = [(10, 1.0), (11, 5.0), (12, 0.5)];
        // Thread 11 rose by 0.5, thread 12 by 3.5; thread 13 started in between and is
        // left out, since its start is unknown.
        let after = [(10, 1.2), (11, 5.5), (12, 4.0), (13, 9.0)];
        assert_eq!(busiest_thread(&before, &after), Some(3.5));
        assert_eq!(busiest_thread(&before, &[]), None);
        let top = top_threads(&before, &after);
        for (got, want) in top.iter().zip([3.5, 0.5, 0.2, 0.0]) {
            assert!((got - want).abs() < 1e-9, "{top:?}");
        }
    }

    #[test]
    fn this_process_has_a_thread_with_cpu_time() {
        let threads = thread_cpu_seconds(std::process::id(), clock_ticks_per_second().unwrap());
        assert!(threads.iter().any(|&(tid, _)| tid == std::process::id()));
        assert!(thread_cpu_seconds(u32::MAX, 100).is_empty());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let ticks = clock_ticks_per_second().unwrap();
        assert!(cpu_seconds(std::process::id(), ticks).is_some());
        assert!(cpu_seconds_user_system(std::process::id(), ticks).is_some());
        assert_eq!(cpu_seconds_user_system(u32::MAX, ticks), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
