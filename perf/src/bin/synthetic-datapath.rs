//! synthetic-datapath: a vhost-user net backend's data path alone. A synthetic vhost-user guest
//! (the `vhost` crate's frontend, shared memory, split rings, a minimal TCP on raw frames) sends
//! to and receives from a TCP server on host loopback through the backend: vhost-net-user, or
//! Debian 13's passt in vhost-user mode, with the same frames. Host-loopback iperf3 runs beside
//! it as the ceiling. See `perf/README.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};
use vnu_perf::procs::{Daemon, Netns};
use vnu_perf::synth::floor::{self, FloorConfig};
use vnu_perf::synth::peer::{Pattern, Peer, PeerRole};
use vnu_perf::synth::ring::{Device, DriverConfig, MAX_QUEUE_SIZE};
use vnu_perf::synth::session::{Counters, Mark, Outcome, Role, Session, SessionConfig};
use vnu_perf::synth::wire;
use vnu_perf::{
    IperfServer, binary_description, busiest_thread, clock_ticks_per_second,
    cpu_seconds_user_system, load_average, median, parse_summary, stat_cpu_seconds,
    stat_cpu_seconds_user_system, steal_ticks, thread_cpu_seconds,
};
use vnu_tests::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "synthetic-datapath",
    about = "A vhost-user net backend's data path alone: a synthetic vhost-user guest sends to \
             and receives from host loopback through vhost-net-user or Debian 13's passt \
             (vhost-user mode), with host-loopback iperf3 as the ceiling"
)]
struct Args {
    /// Runs of every test; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,

    /// Seconds measured per test (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    time: f64,

    /// Seconds of traffic before the measurement starts.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,

    /// Which backends to drive (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Ours, Target::Passt, Target::Floor])]
    backends: Vec<Target>,

    /// Which frame sizes and feature sets to test (comma-separated). A backend that does not
    /// offer a mode's features is left out of it.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Offload, Mode::Mtu65520])]
    modes: Vec<Mode>,

    /// Which directions to test (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Dir::GuestToHost, Dir::HostToGuest])]
    directions: Vec<Dir>,

    /// Queue pairs to test with (comma-separated), one flow per pair, each pair driven by its
    /// own thread. passt has one pair: it is tested with 1 only.
    #[arg(long, value_delimiter = ',', default_values_t = [1u16],
          value_parser = clap::value_parser!(u16).range(1..=16))]
    queue_pairs: Vec<u16>,

    /// Also negotiate VIRTIO_RING_F_EVENT_IDX (QEMU guests do): notification suppression both
    /// ways.
    #[arg(long)]
    event_idx: bool,

    /// Descriptors per virtqueue (QEMU's default is 256).
    #[arg(long, default_value_t = 256)]
    queue_size: u16,

    /// Bytes per RX buffer [default: 1536 in mode plain, else 4096, as Linux sizes its
    /// mergeable buffers].
    #[arg(long)]
    rx_buffer: Option<u32>,

    /// Largest TCP payload of one TSO frame (44 segments of 1460 by default).
    #[arg(long, default_value_t = 64240)]
    tso_payload: usize,

    /// Receive window the guest advertises, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    rcv_window: u32,

    /// Milliseconds without ACK progress after which the guest sends again from the first
    /// unacknowledged byte (Linux's minimum RTO is 200 ms).
    #[arg(long, default_value_t = 200)]
    rto_ms: u64,

    /// Duplicate ACKs after which the guest sends again from the first unacknowledged byte
    /// (fast retransmit; 3 as in Linux without SACK).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    dupack_threshold: u32,

    /// Do not check received bytes against the pattern (the guest then never reads payload).
    #[arg(long)]
    no_verify: bool,

    /// Skip the host-loopback iperf3 ceiling.
    #[arg(long)]
    no_ceiling: bool,

    /// Pass this argument to vhost-net-user (repeat for more).
    #[arg(long = "backend-arg", value_name = "ARG", allow_hyphen_values = true)]
    backend_args: Vec<String>,

    /// Pass this argument to passt (repeat for more).
    #[arg(long = "passt-arg", value_name = "ARG", allow_hyphen_values = true)]
    passt_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// vhost-net-user (target/release, or $VNU_BIN).
    Ours,
    /// Debian 13's passt, `passt --vhost-user`, in a network namespace of its own.
    Passt,
    /// No backend: a thread of this program makes the host-side socket calls a backend makes
    /// for the flow, as if the guest took every byte at once (see `synth::floor`). Its CPU per
    /// GB is the least any backend making these calls could cost on this kernel.
    Floor,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Passt => "passt",
            Target::Floor => "floor",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// VERSION_1, MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4; MTU 1500, TSO frames of
    /// up to 64 KiB (vhost-net-user's best mode).
    Offload,
    /// VERSION_1, MRG_RXBUF only; MTU 1500: 1514-byte frames with complete checksums.
    Plain,
    /// VERSION_1, MRG_RXBUF only; MTU 65520: 65534-byte frames (65480 bytes of TCP payload)
    /// with complete checksums (passt's default MTU and its best mode).
    #[value(name = "mtu65520")]
    Mtu65520,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dir {
    /// The guest sends to a host sink.
    #[value(name = "guest-to-host")]
    GuestToHost,
    /// A host source sends to the guest.
    #[value(name = "host-to-guest")]
    HostToGuest,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Offload => "offload",
            Mode::Plain => "plain",
            Mode::Mtu65520 => "mtu65520",
        }
    }

    fn features(self, event_idx: bool) -> u64 {
        let mut f = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF;
        if self == Mode::Offload {
            f |= 1 << VIRTIO_NET_F_CSUM
                | 1 << VIRTIO_NET_F_GUEST_CSUM
                | 1 << VIRTIO_NET_F_HOST_TSO4
                | 1 << VIRTIO_NET_F_GUEST_TSO4;
        }
        if event_idx {
            f |= 1 << VIRTIO_RING_F_EVENT_IDX;
        }
        f
    }

    fn rx_buffer(self) -> u32 {
        match self {
            Mode::Offload | Mode::Mtu65520 => 4096,
            Mode::Plain => 1536,
        }
    }

    fn mtu(self) -> u16 {
        match self {
            Mode::Offload | Mode::Plain => 1500,
            Mode::Mtu65520 => 65520,
        }
    }

    /// The guest's MSS at this MTU (IPv4 and TCP headers without options).
    fn mss(self) -> u16 {
        self.mtu() - (wire::IP_LEN + wire::TCP_LEN) as u16
    }
}

fn direction_label(role: Role) -> &'static str {
    match role {
        Role::Send => "guest→host",
        Role::Receive => "host→guest",
    }
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Test {
    target: Target,
    mode: Mode,
    pairs: u16,
    role: Role,
}

impl Test {
    fn name(&self) -> String {
        format!(
            "{} {} {} pair{} {}",
            self.target.name(),
            self.mode.name(),
            self.pairs,
            if self.pairs == 1 { "" } else { "s" },
            direction_label(self.role)
        )
    }
}

/// CPU time of the backend (whole and per thread), this session's driver thread and its peer
/// thread at one mark.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// The backend's user and system CPU seconds.
    backend: Option<(f64, f64)>,
    backend_threads: Vec<(u32, f64)>,
    driver: Option<f64>,
    peer: Option<f64>,
    peer_bytes: u64,
}

/// One session's (queue pair's) figures.
#[derive(Debug, Clone)]
struct PairResult {
    outcome: Outcome,
    samples: [Sample; 2],
}

/// One test's figures over its measured interval.
#[derive(Debug, Clone, Default)]
struct TestResult {
    seconds: f64,
    bytes: u64,
    frames: u64,
    backend_cpu: Option<f64>,
    /// The part of `backend_cpu` in the kernel (system time).
    backend_kernel_cpu: Option<f64>,
    /// CPU of the backend's busiest thread.
    backend_busiest: Option<f64>,
    /// Every backend thread's CPU seconds over the interval, busiest first.
    backend_threads: Vec<f64>,
    driver_cpu: Option<f64>,
    peer_cpu: Option<f64>,
    /// Bytes each queue pair carried in the interval.
    pair_bytes: Vec<u64>,
    /// Driver counters over the interval, and over the whole test (for anomalies); sums over
    /// the pairs.
    interval: Counters,
    whole: Counters,
    kicks: [u64; 2],
    wakeups: u64,
    /// The MSS the backend announced to the guest.
    backend_mss: Option<u16>,
    /// The backend's counters for this connection (vhost-net-user's `connection summary`).
    backend_summary: Option<String>,
}

impl TestResult {
    fn gbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }

    fn frames_per_s(&self) -> f64 {
        self.frames as f64 / self.seconds
    }

    fn backend_per_gb(&self) -> Option<f64> {
        self.per_gb(self.backend_cpu?)
    }

    /// The backend's kernel CPU per GB: what its system calls cost, whatever its own code does.
    fn backend_kernel_per_gb(&self) -> Option<f64> {
        self.per_gb(self.backend_kernel_cpu?)
    }

    fn per_gb(&self, cpu: f64) -> Option<f64> {
        Some(cpu / (self.bytes as f64 / 1e9)).filter(|_| self.bytes > 0)
    }
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("synthetic-datapath: some tests failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("synthetic-datapath: {e}");
            ExitCode::from(2)
        }
    }
}

/// `scripts/debian13.sh`, which runs a command inside the Debian 13 root.
fn debian13_script() -> PathBuf {
    vnu_tests::workspace_root().join("scripts/debian13.sh")
}

/// Debian 13's passt package version.
fn passt_version() -> Result<String, String> {
    let out = Command::new(debian13_script())
        .args(["dpkg-query", "-W", "-f=${Version}", "passt"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", debian13_script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "the Debian 13 root (scripts/debian13.sh) has no passt: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A backend serving one test: vhost-net-user, or passt with its namespace and directory.
enum Running {
    Ours(Backend),
    Passt {
        // Drop order: passt, then its namespace, then its directory.
        daemon: Daemon,
        pid: u32,
        socket: PathBuf,
        netns: Netns,
        _dir: vnu_perf::PasstDir,
    },
}

impl Running {
    fn start(target: Target, mode: Mode, args: &Args) -> Result<Running, String> {
        match target {
            Target::Ours => {
                let mut extra: Vec<String> = Vec::new();
                if mode == Mode::Mtu65520 {
                    extra.extend(["--mtu".into(), mode.mtu().to_string()]);
                }
                extra.extend(args.backend_args.iter().cloned());
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                Ok(Running::Ours(
                    Backend::start(&extra).map_err(|e| e.to_string())?,
                ))
            }
            Target::Passt => {
                // passt insists on a default route: a namespace whose route leads nowhere,
                // as compare-backends gives it. Its loopback is where the peer listens.
                let netns = Netns::with_dead_end_route("s")?;
                let files = vnu_perf::PasstDir::new()?;
                let mut command = netns.exec_prefix();
                command.push(debian13_script().display().to_string());
                // passt exits when the frontend goes away: one passt per test.
                command.extend(["passt", "--vhost-user", "--one-off"].map(String::from));
                command.extend(vnu_perf::passt_common_args(&files.socket, &files.pid_file));
                command.extend(["--mtu".to_owned(), mode.mtu().to_string()]);
                command.extend(args.passt_args.iter().cloned());
                let daemon = Daemon::start("passt", &command, &files.log, &files.socket)?;
                Ok(Running::Passt {
                    pid: files.pid(daemon.pid()),
                    daemon,
                    socket: files.socket.clone(),
                    netns,
                    _dir: files,
                })
            }
            Target::Floor => Err("the floor runs no backend".into()),
        }
    }

    fn socket(&self) -> &Path {
        match self {
            Running::Ours(b) => b.socket(),
            Running::Passt { socket, .. } => socket,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::Ours(b) => b.pid(),
            Running::Passt { pid, .. } => *pid,
        }
    }

    /// Where the host side listens: the backend's network namespace, if not ours.
    fn netns(&self) -> Option<PathBuf> {
        match self {
            Running::Ours(_) => None,
            Running::Passt { netns, .. } => Some(Path::new("/run/netns").join(netns.name())),
        }
    }

    fn log(&self) -> String {
        match self {
            Running::Ours(b) => b.log(),
            Running::Passt { daemon, .. } => daemon.log(),
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    if !(args.time > 0.0 && args.warmup >= 0.0) {
        return Err("--time must be positive and --warmup not negative".into());
    }
    if !args.queue_size.is_power_of_two() || args.queue_size > MAX_QUEUE_SIZE || args.queue_size < 8
    {
        return Err(format!(
            "--queue-size: a power of two from 8 to {MAX_QUEUE_SIZE}"
        ));
    }
    if args.tso_payload < usize::from(wire::MSS) || args.tso_payload > wire::MAX_IP_PAYLOAD {
        return Err(format!(
            "--tso-payload: from {} to {}",
            wire::MSS,
            wire::MAX_IP_PAYLOAD
        ));
    }
    let ticks = clock_ticks_per_second()?;

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|m| m.1.trim())
        })
        .unwrap_or("?");
    println!(
        "machine   {nproc} CPUs, {model}, kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!("load avg  {}", load_average());
    if args.backends.contains(&Target::Ours) {
        let bin = vnu_perf::release_backend()?;
        println!("ours      {}", binary_description(&bin));
    }
    if args.backends.contains(&Target::Floor) {
        println!(
            "floor     no backend: this program's own thread makes the host-side socket calls \
             of the flow (recvmsg(MSG_PEEK|MSG_WAITALL) of up to {FLOOR_FRAMES_PER_READ} frames \
             then recv(MSG_TRUNC); sendmsg of up to {FLOOR_FRAMES_PER_WRITE} frames), as if \
             the guest took every byte at once"
        );
    }
    if args.backends.contains(&Target::Passt) {
        println!(
            "passt     passt --vhost-user, Debian 13 package {} (scripts/debian13.sh), in a \
             network namespace",
            passt_version()?
        );
    }
    println!(
        "driver    queue size {}, RX buffers {}, TSO payload up to {} B, receive window {} B, \
         EVENT_IDX {}, payload checked: {}, resend after {} ms or {} duplicate ACKs",
        args.queue_size,
        args.rx_buffer
            .map_or("4096 (offload, mtu65520) / 1536 (plain)".into(), |b| b
                .to_string()),
        args.tso_payload,
        args.rcv_window,
        if args.event_idx { "on" } else { "off" },
        if args.no_verify { "no" } else { "yes" },
        args.rto_ms,
        args.dupack_threshold
    );
    println!(
        "tests     {} runs of {} s (after {} s warm-up) per backend, mode, queue pairs and \
         direction\n",
        args.runs, args.time, args.warmup
    );

    let mut tests: Vec<Test> = Vec::new();
    for &target in &args.backends {
        if target == Target::Passt && args.event_idx {
            println!("skipped   passt: it offers no EVENT_IDX (features 0x144008000)");
            continue;
        }
        for &mode in &args.modes {
            if target == Target::Passt && mode == Mode::Offload {
                println!("skipped   passt offload: passt offers no checksum or TSO features");
                continue;
            }
            for &pairs in &args.queue_pairs {
                if target == Target::Floor && pairs > 1 {
                    println!(
                        "skipped   floor {} {pairs} pairs: the floor is one flow",
                        mode.name()
                    );
                    continue;
                }
                if target == Target::Passt && pairs > 1 {
                    println!(
                        "skipped   passt {} {pairs} pairs: passt has one",
                        mode.name()
                    );
                    continue;
                }
                for d in &args.directions {
                    let role = match d {
                        Dir::GuestToHost => Role::Send,
                        Dir::HostToGuest => Role::Receive,
                    };
                    tests.push(Test {
                        target,
                        mode,
                        pairs,
                        role,
                    });
                }
            }
        }
    }
    let pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
    let mut results: Vec<Vec<Result<TestResult, String>>> = vec![Vec::new(); tests.len()];
    let mut ceiling: Vec<Result<f64, String>> = Vec::new();
    let mut local_port = 40000u16;
    let started = Instant::now();
    let steal_start = steal_ticks();
    for run in 0..args.runs {
        eprintln!("synthetic-datapath: run {}/{}", run + 1, args.runs);
        if !args.no_ceiling {
            ceiling.push(loopback_ceiling(args.time + args.warmup));
        }
        for (k, test) in tests.iter().enumerate() {
            local_port = local_port.wrapping_add(test.pairs).max(40000);
            let r = run_test(&pattern, args, test, local_port, ticks);
            if let Err(e) = &r {
                eprintln!("synthetic-datapath: {} failed: {e}", test.name());
            }
            results[k].push(r);
        }
    }
    let ceiling_gbit: Vec<f64> = ceiling
        .iter()
        .filter_map(|c| c.as_ref().ok().copied())
        .collect();
    let ceiling_median = median(&ceiling_gbit);
    print_table(&tests, &results, ceiling_median);
    println!();
    print_ratios(&tests, &results);
    match &ceiling_median {
        Some(c) => println!(
            "ceiling   host loopback `iperf3 -c 127.0.0.1` (one stream): {c:.1} Gbit/s, runs {}",
            ceiling
                .iter()
                .map(|c| c.as_ref().map_or("fail".into(), |g| format!("{g:.1}")))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None if args.no_ceiling => {}
        None => println!(
            "ceiling   host loopback iperf3 failed: {}",
            ceiling
                .iter()
                .filter_map(|c| c.as_ref().err().cloned())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
    println!(
        "load avg  {} (at the end; total {:.0?})",
        load_average(),
        started.elapsed()
    );
    if let (Some((s0, cpus)), Some((s1, _))) = (steal_start, steal_ticks()) {
        // Steal: CPU time the hypervisor gave other tenants, as a share of all CPUs' time.
        let total = started.elapsed().as_secs_f64() * cpus as f64 * ticks as f64;
        println!(
            "steal     {:.1}% of the {cpus} CPUs' time over the whole run",
            (s1 - s0) as f64 / total.max(1.0) * 100.0
        );
    }
    let ok = print_anomalies(&tests, &results);
    Ok(ok)
}

/// One synthetic test: a fresh backend, a fresh vhost-user connection with `test.pairs` queue
/// pairs, one TCP connection (and one host peer) per pair, each pair driven by its own thread.
fn run_test(
    pattern: &Pattern,
    args: &Args,
    test: &Test,
    local_port: u16,
    ticks: u64,
) -> Result<TestResult, String> {
    if test.target == Target::Floor {
        return run_floor(pattern, args, test, ticks);
    }
    let running = Running::start(test.target, test.mode, args)?;
    let result = drive(&running, pattern, args, test, local_port, ticks);
    // Disconnecting ends the backend's side of the connection; vhost-net-user's counters
    // follow in its log.
    let summary = match &running {
        Running::Ours(_) => wait_summary(&running),
        Running::Passt { .. } => {
            // VNU_SYNTH_PASST_LOG=N: the last N lines of passt's log after each test.
            if let Some(n) = std::env::var("VNU_SYNTH_PASST_LOG")
                .ok()
                .and_then(|n| n.parse().ok())
            {
                eprintln!("{}", vnu_tests::tail(&running.log(), n));
            }
            None
        }
    };
    let result = result.map_err(|e| {
        let log = vnu_tests::tail(&running.log(), 10);
        match &summary {
            Some(s) => format!("{e}\n  backend: {s}"),
            None if log.trim().is_empty() => e,
            None => format!("{e}\n  backend log:\n{log}"),
        }
    })?;
    Ok(TestResult {
        backend_summary: summary,
        ..result
    })
}

fn drive(
    running: &Running,
    pattern: &Pattern,
    args: &Args,
    test: &Test,
    local_port: u16,
    ticks: u64,
) -> Result<TestResult, String> {
    let netns = running.netns();
    let peers = (0..test.pairs)
        .map(|_| Peer::start(peer_role(test.role, args), netns.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut device = Device::connect(
        running.socket(),
        DriverConfig {
            features: test.mode.features(args.event_idx),
            queue_size: args.queue_size,
            rx_buffer: args.rx_buffer.unwrap_or(test.mode.rx_buffer()),
            pattern_len: pattern.bytes().len(),
            queue_pairs: test.pairs,
            linear_tx: (test.mode != Mode::Offload)
                .then_some(u32::from(test.mode.mtu()) + wire::ETH_LEN as u32),
        },
    )?;
    device
        .memory()
        .ok_or("no queue pairs")?
        .write_slice(
            pattern.bytes(),
            GuestAddress(device.pairs[0].pattern_addr()),
        )
        .map_err(|e| format!("guest memory: {e}"))?;
    let backend_pid = running.pid();
    let together = Together::new(device.pairs.len());
    let outcomes: Vec<Result<PairResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = device
            .pairs
            .iter_mut()
            .zip(&peers)
            .enumerate()
            .map(|(k, (driver, peer))| {
                let together = &together;
                let config = SessionConfig {
                    role: test.role,
                    offload: test.mode == Mode::Offload,
                    tso_payload: args.tso_payload,
                    mss: test.mode.mss(),
                    rcv_window: args.rcv_window,
                    rto: Duration::from_millis(args.rto_ms.max(1)),
                    dupack_threshold: args.dupack_threshold,
                    verify: !args.no_verify,
                    warmup: Duration::from_secs_f64(args.warmup),
                    duration: Duration::from_secs_f64(args.time),
                    port: peer.port(),
                    local_port: local_port.wrapping_add(k as u16),
                };
                scope.spawn(move || {
                    let mut pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
                    let mut samples: [Sample; 2] = Default::default();
                    let session = Session::new(driver, &mut pattern, config);
                    let outcome = session.run(|m| {
                        let i = match m {
                            Mark::Connected => {
                                together.arrive();
                                return;
                            }
                            Mark::Start => 0,
                            Mark::End => 1,
                        };
                        // The first pair's thread samples the backend for all.
                        let whole = k == 0;
                        samples[i] = Sample {
                            backend: whole
                                .then(|| cpu_seconds_user_system(backend_pid, ticks))
                                .flatten(),
                            backend_threads: if whole {
                                thread_cpu_seconds(backend_pid, ticks)
                            } else {
                                Vec::new()
                            },
                            driver: stat_cpu_seconds(Path::new("/proc/thread-self/stat"), ticks),
                            peer: stat_cpu_seconds(
                                Path::new(&format!("/proc/self/task/{}/stat", peer.tid())),
                                ticks,
                            ),
                            peer_bytes: peer.bytes(),
                        };
                    });
                    outcome.map(|outcome| PairResult { outcome, samples })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a driver thread panicked".into()))
            })
            .collect()
    });
    drop(device);
    let mut peer_errors = Vec::new();
    for peer in peers {
        if let Err(e) = peer.finish() {
            peer_errors.push(e);
        }
    }
    let pairs = outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
    if !peer_errors.is_empty() {
        return Err(peer_errors.join("; "));
    }
    Ok(combine(&pairs, test.role))
}

/// The floor's most frames a socket read: vhost-net-user's (`MAX_FRAMES_PER_READ` in netcore's
/// TCP host side). Fewer when the ring holds fewer.
const FLOOR_FRAMES_PER_READ: usize = 64;
/// The floor's most frames a socket write: vhost-net-user's TX batch (`TX_BATCH_CHAINS`).
/// Fewer when the ring holds fewer two-descriptor chains.
const FLOOR_FRAMES_PER_WRITE: usize = 128;

/// The floor's test: a peer, and the flow's socket calls made by this thread (see
/// `synth::floor`); the "backend" figures are this thread's.
fn run_floor(
    pattern: &Pattern,
    args: &Args,
    test: &Test,
    ticks: u64,
) -> Result<TestResult, String> {
    let peer = Peer::start(peer_role(test.role, args), None)?;
    let frame_payload = match test.mode {
        Mode::Offload => args.tso_payload,
        Mode::Plain | Mode::Mtu65520 => usize::from(test.mode.mss()),
    };
    let config = FloorConfig {
        role: test.role,
        frame_payload,
        frames_per_call: match test.role {
            Role::Receive => FLOOR_FRAMES_PER_READ,
            Role::Send => FLOOR_FRAMES_PER_WRITE.min(usize::from(args.queue_size) / 2),
        },
        rx_buffer: args.rx_buffer.unwrap_or(test.mode.rx_buffer()) as usize,
        rx_buffers: usize::from(args.queue_size),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.time),
        port: peer.port(),
    };
    let peer_stat = format!("/proc/self/task/{}/stat", peer.tid());
    let mut samples: [Sample; 2] = Default::default();
    let outcome = floor::run(&config, pattern, |m| {
        let i = match m {
            Mark::Connected => return,
            Mark::Start => 0,
            Mark::End => 1,
        };
        samples[i] = Sample {
            backend: stat_cpu_seconds_user_system(Path::new("/proc/thread-self/stat"), ticks),
            backend_threads: Vec::new(),
            driver: None,
            peer: stat_cpu_seconds(Path::new(&peer_stat), ticks),
            peer_bytes: peer.bytes(),
        };
    });
    let peer_result = peer.finish();
    let outcome = outcome?;
    peer_result?;
    let [s0, s1] = &samples;
    let bytes = match test.role {
        Role::Send => s1.peer_bytes - s0.peer_bytes,
        Role::Receive => outcome.end.1 - outcome.start.1,
    };
    let (cpu, kernel_cpu) = backend_cpu_between(s0, s1);
    Ok(TestResult {
        seconds: (outcome.end.0 - outcome.start.0).as_secs_f64(),
        bytes,
        // Frames of the mode's size that many bytes would have been.
        frames: bytes / frame_payload as u64,
        backend_cpu: cpu,
        backend_kernel_cpu: kernel_cpu,
        backend_busiest: cpu,
        backend_threads: cpu.into_iter().collect(),
        driver_cpu: None,
        peer_cpu: diff(s0.peer, s1.peer),
        pair_bytes: vec![bytes],
        interval: Counters::default(),
        whole: Counters::default(),
        kicks: [0; 2],
        wakeups: 0,
        backend_mss: None,
        backend_summary: None,
    })
}

/// What the host thread does in a test of `role`: check what the guest sends, or send.
fn peer_role(role: Role, args: &Args) -> PeerRole {
    match role {
        Role::Send => PeerRole::Sink {
            verify: !args.no_verify,
        },
        Role::Receive => PeerRole::Source,
    }
}

/// `b - a`, when both were read.
fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// The backend's CPU seconds between two samples: (user + system, system).
fn backend_cpu_between(a: &Sample, b: &Sample) -> (Option<f64>, Option<f64>) {
    (
        diff(a.backend.map(|(u, s)| u + s), b.backend.map(|(u, s)| u + s)),
        diff(a.backend.map(|(_, s)| s), b.backend.map(|(_, s)| s)),
    )
}

/// Lets the pairs' sessions start their warm-up together once all are connected (or after
/// 10 s, if one never connects: it reports its own error).
struct Together {
    arrived: AtomicUsize,
    n: usize,
}

impl Together {
    fn new(n: usize) -> Together {
        Together {
            arrived: AtomicUsize::new(0),
            n,
        }
    }

    fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.arrived.load(Ordering::SeqCst) < self.n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Adds up the pairs' figures. The interval is the first pair's (all start together); each
/// pair's bytes are its own interval's.
fn combine(pairs: &[PairResult], role: Role) -> TestResult {
    let sum = |v: Vec<Option<f64>>| v.into_iter().sum::<Option<f64>>();
    let first = &pairs[0];
    let [s0, s1] = &first.samples;
    let (t0, _) = first.outcome.start;
    let (t1, _) = first.outcome.end;
    let (backend_cpu, backend_kernel_cpu) = backend_cpu_between(s0, s1);
    let pair_bytes: Vec<u64> = pairs
        .iter()
        .map(|p| {
            let [a, b] = &p.samples;
            match role {
                Role::Send => b.peer_bytes - a.peer_bytes,
                Role::Receive => p.outcome.end.1.data_bytes - p.outcome.start.1.data_bytes,
            }
        })
        .collect();
    let mut interval = Counters::default();
    let mut whole = Counters::default();
    let mut kicks = [0; 2];
    let mut wakeups = 0;
    for p in pairs {
        add(
            &mut interval,
            &counters_diff(&p.outcome.start.1, &p.outcome.end.1),
        );
        add(&mut whole, &p.outcome.end.1);
        kicks[0] += p.outcome.kicks[0];
        kicks[1] += p.outcome.kicks[1];
        wakeups += p.outcome.wakeups;
    }
    TestResult {
        seconds: (t1 - t0).as_secs_f64(),
        bytes: pair_bytes.iter().sum(),
        frames: interval.data_frames,
        backend_cpu,
        backend_kernel_cpu,
        backend_busiest: busiest_thread(&s0.backend_threads, &s1.backend_threads),
        backend_threads: thread_deltas(&s0.backend_threads, &s1.backend_threads),
        driver_cpu: sum(pairs
            .iter()
            .map(|p| diff(p.samples[0].driver, p.samples[1].driver))
            .collect()),
        peer_cpu: sum(pairs
            .iter()
            .map(|p| diff(p.samples[0].peer, p.samples[1].peer))
            .collect()),
        pair_bytes,
        interval,
        whole,
        kicks,
        wakeups,
        backend_mss: first.outcome.backend_mss,
        backend_summary: None,
    }
}

/// Each thread's CPU seconds between two samples, busiest first.
fn thread_deltas(before: &[(u32, f64)], after: &[(u32, f64)]) -> Vec<f64> {
    let mut v: Vec<f64> = after
        .iter()
        .filter_map(|&(tid, end)| {
            let &(_, start) = before.iter().find(|&&(t, _)| t == tid)?;
            Some(end - start)
        })
        .collect();
    v.sort_by(|a, b| b.total_cmp(a));
    v
}

fn add(total: &mut Counters, c: &Counters) {
    total.data_frames += c.data_frames;
    total.data_bytes += c.data_bytes;
    total.gso_frames += c.gso_frames;
    total.rx_buffers += c.rx_buffers;
    total.acks += c.acks;
    total.go_back_dupack += c.go_back_dupack;
    total.go_back_timeout += c.go_back_timeout;
    total.out_of_order += c.out_of_order;
    total.duplicate += c.duplicate;
    total.other_frames += c.other_frames;
    total.data_valid_unasked += c.data_valid_unasked;
}

fn counters_diff(a: &Counters, b: &Counters) -> Counters {
    Counters {
        data_frames: b.data_frames - a.data_frames,
        data_bytes: b.data_bytes - a.data_bytes,
        gso_frames: b.gso_frames - a.gso_frames,
        rx_buffers: b.rx_buffers - a.rx_buffers,
        acks: b.acks - a.acks,
        go_back_dupack: b.go_back_dupack - a.go_back_dupack,
        go_back_timeout: b.go_back_timeout - a.go_back_timeout,
        out_of_order: b.out_of_order - a.out_of_order,
        duplicate: b.duplicate - a.duplicate,
        other_frames: b.other_frames - a.other_frames,
        data_valid_unasked: b.data_valid_unasked - a.data_valid_unasked,
    }
}

const SUMMARY_MARK: &str = "connection summary: ";

fn summary_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(SUMMARY_MARK).map(|s| s.1.to_owned()))
        .collect()
}

/// Waits (up to 3 s) for vhost-net-user to log the summary of its one connection, which just
/// ended.
fn wait_summary(running: &Running) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(line) = summary_lines(&running.log()).pop() {
            return Some(line);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host loopback iperf3, one stream, `seconds` long: the ceiling for anything that ends in a
/// host TCP socket on this machine.
fn loopback_ceiling(seconds: f64) -> Result<f64, String> {
    let server = IperfServer::start()?;
    let secs = seconds.ceil().max(1.0) as u64;
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-f", "m", "-t"])
        .arg(secs.to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .output()
        .map_err(|e| format!("running iperf3 -c: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(parse_summary)
        .find(|s| s.receiver)
        .map(|s| s.mbit_per_s / 1000.0)
        .ok_or_else(|| {
            format!(
                "iperf3 -c 127.0.0.1 gave no result: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// A count per second with a k/M suffix.
fn rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
        None => "-".into(),
    }
}

/// Medians of one test's successful runs.
struct Medians<'a> {
    ok: Vec<&'a TestResult>,
}

impl<'a> Medians<'a> {
    fn of(results: &'a [Result<TestResult, String>]) -> Medians<'a> {
        Medians {
            ok: results.iter().filter_map(|r| r.as_ref().ok()).collect(),
        }
    }

    fn get(&self, f: impl Fn(&TestResult) -> Option<f64>) -> Option<f64> {
        median(&self.ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    }

    /// A CPU time over the interval as a share of one CPU.
    fn pct(&self, f: impl Fn(&TestResult) -> Option<f64>) -> String {
        self.get(|r| Some(f(r)? / r.seconds * 100.0))
            .map_or("-".into(), |p| format!("{p:.0}%"))
    }
}

fn print_table(tests: &[Test], results: &[Vec<Result<TestResult, String>>], ceiling: Option<f64>) {
    println!(
        "{:<6} {:<8} {:>5} {:<11} {:>7} {:<17} {:>8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>7} {:>6} \
         {:>8} {:>8}",
        "backend",
        "mode",
        "pairs",
        "direction",
        "Gbit/s",
        "runs",
        "pkts/s",
        "ceiling",
        "backend",
        "s/GB",
        "kernel",
        "busiest",
        "driver",
        "peer",
        "kicks/s",
        "irqs/s"
    );
    for (k, test) in tests.iter().enumerate() {
        let m = Medians::of(&results[k]);
        let gbit = m.get(|r| Some(r.gbit()));
        let runs: Vec<String> = results[k]
            .iter()
            .map(|r| {
                r.as_ref()
                    .map_or("fail".into(), |r| format!("{:.2}", r.gbit()))
            })
            .collect();
        println!(
            "{:<7} {:<8} {:>5} {:<11} {:>7} {:<17} {:>8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>7} \
             {:>6} {:>8} {:>8}",
            test.target.name(),
            test.mode.name(),
            test.pairs,
            direction_label(test.role),
            fmt(gbit, 2),
            runs.join(" "),
            rate(m.get(|r| Some(r.frames_per_s()))),
            match (gbit, ceiling) {
                (Some(g), Some(c)) if c > 0.0 => format!("{:.0}%", g / c * 100.0),
                _ => "-".into(),
            },
            m.pct(|r| r.backend_cpu),
            fmt(m.get(|r| r.backend_per_gb()), 3),
            fmt(m.get(|r| r.backend_kernel_per_gb()), 3),
            m.pct(|r| r.backend_busiest),
            m.pct(|r| r.driver_cpu),
            m.pct(|r| r.peer_cpu),
            rate(m.get(|r| Some((r.kicks[0] + r.kicks[1]) as f64 / r.seconds))),
            rate(m.get(|r| Some(r.wakeups as f64 / r.seconds))),
        );
    }
}

/// Ratios of the medians: ours against passt at equal frames (both in the same mode, one pair)
/// and each in its best mode (ours with offloads, passt at MTU 65520); the floor against passt
/// and ours against the floor, mode by mode. Also how the pairs shared the bytes when there
/// were several.
fn print_ratios(tests: &[Test], results: &[Vec<Result<TestResult, String>>]) {
    let find = |target: Target, mode: Mode, pairs: u16, role: Role| {
        tests
            .iter()
            .position(|t| {
                *t == Test {
                    target,
                    mode,
                    pairs,
                    role,
                }
            })
            .map(|k| Medians::of(&results[k]))
    };
    let mut lines = Vec::new();
    // `first` over `second`, both medians.
    let mut compare = |label: String, first: Option<Medians<'_>>, second: Option<Medians<'_>>| {
        let (Some(first), Some(second)) = (first, second) else {
            return;
        };
        let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let ratio = |f: &dyn Fn(&TestResult) -> Option<f64>| ratio_of(first.get(f), second.get(f));
        // The first's kernel part against the second's whole: for ours against passt, the
        // least ours' CPU per GB could come to with its own code costing nothing, the system
        // calls it makes staying the same.
        let kernel_floor = ratio_of(
            first.get(|r| r.backend_kernel_per_gb()),
            second.get(|r| r.backend_per_gb()),
        );
        lines.push(format!(
            "  {label:<58} Gbit/s {:>6}   pkts/s {:>6}   backend CPU per GB {:>6} (in the kernel \
             alone {:>6})",
            ratio(&|r| Some(r.gbit())),
            ratio(&|r| Some(r.frames_per_s())),
            ratio(&|r| r.backend_per_gb()),
            kernel_floor,
        ));
    };
    for role in [Role::Send, Role::Receive] {
        let dir = direction_label(role);
        for mode in [Mode::Plain, Mode::Mtu65520] {
            compare(
                format!("ours / passt, equal frames, {} {dir}", mode.name()),
                find(Target::Ours, mode, 1, role),
                find(Target::Passt, mode, 1, role),
            );
        }
        compare(
            format!("ours / passt, best modes (offload vs mtu65520) {dir}"),
            find(Target::Ours, Mode::Offload, 1, role),
            find(Target::Passt, Mode::Mtu65520, 1, role),
        );
        for mode in [Mode::Plain, Mode::Mtu65520] {
            compare(
                format!("floor / passt, {} {dir}", mode.name()),
                find(Target::Floor, mode, 1, role),
                find(Target::Passt, mode, 1, role),
            );
        }
        for mode in [Mode::Offload, Mode::Plain, Mode::Mtu65520] {
            compare(
                format!("ours / floor, {} {dir}", mode.name()),
                find(Target::Ours, mode, 1, role),
                find(Target::Floor, mode, 1, role),
            );
        }
    }
    if !lines.is_empty() {
        println!(
            "ratios of medians, the first named over the second (1 queue pair; \"in the kernel \
             alone\": the first's system time per GB over the second's whole CPU per GB):"
        );
        for l in lines {
            println!("{l}");
        }
        println!();
    }
    let mut shares = Vec::new();
    for (k, test) in tests.iter().enumerate().filter(|(_, t)| t.pairs > 1) {
        let m = Medians::of(&results[k]);
        let share: Vec<String> = (0..usize::from(test.pairs))
            .map(|p| {
                let pct =
                    m.get(|r| Some(*r.pair_bytes.get(p)? as f64 / r.bytes.max(1) as f64 * 100.0));
                fmt(pct, 0) + "%"
            })
            .collect();
        shares.push(format!(
            "  {:<44} bytes per pair {}",
            test.name(),
            share.join(" / ")
        ));
    }
    for (k, test) in tests.iter().enumerate() {
        let m = Medians::of(&results[k]);
        let busy: Vec<String> = (0..3)
            .filter_map(|i| m.get(|r| Some(*r.backend_threads.get(i)? / r.seconds * 100.0)))
            .map(|p| format!("{p:.0}%"))
            .collect();
        if !busy.is_empty() {
            shares.push(format!(
                "  {:<44} backend threads, busiest first: {}",
                test.name(),
                busy.join(" ")
            ));
        }
    }
    if !shares.is_empty() {
        println!("queue pairs and backend threads (medians):");
        for l in shares {
            println!("{l}");
        }
        println!();
    }
}

/// Lists what went wrong or looks wrong: failed tests, the sender going back, gaps in what
/// arrived, and the backend's own short writes, drops and retransmissions. Returns false if
/// any test failed.
fn print_anomalies(tests: &[Test], results: &[Vec<Result<TestResult, String>>]) -> bool {
    let mut ok = true;
    let mut lines = Vec::new();
    for (k, test) in tests.iter().enumerate() {
        for (run, r) in results[k].iter().enumerate() {
            let name = format!("{} run {}", test.name(), run + 1);
            match r {
                Err(e) => {
                    ok = false;
                    lines.push(format!("{name}: FAILED: {e}"));
                }
                Ok(r) => {
                    let w = &r.whole;
                    let mut notes = Vec::new();
                    for (what, n) in [
                        ("sender went back after duplicate ACKs", w.go_back_dupack),
                        ("sender went back after a timeout", w.go_back_timeout),
                        ("segments after a gap", w.out_of_order),
                        ("duplicate segments", w.duplicate),
                        (
                            "frames marked DATA_VALID without GUEST_CSUM (checksum unchecked)",
                            w.data_valid_unasked,
                        ),
                    ] {
                        if n > 0 {
                            notes.push(format!("{what}: {n}"));
                        }
                    }
                    if test.target != Target::Ours {
                        // passt logs no counters; the floor has none.
                    } else if let Some(s) = &r.backend_summary {
                        for name in [
                            "tcp.short_writes",
                            "tcp.out_of_order",
                            "tcp.retransmits",
                            "rx_dropped",
                            "tcp.resets_to_guest",
                            "ring.bad_tx_chains",
                            "ring.bad_rx_chains",
                            "tx_malformed",
                        ] {
                            let n = vnu_tests::summary_counter(s, name);
                            if let Some(n) = n.filter(|&n| n > 0) {
                                notes.push(format!("backend {name}: {n}"));
                            }
                        }
                    } else {
                        notes.push("backend logged no connection summary".into());
                    }
                    if !notes.is_empty() {
                        lines.push(format!("{name}: {}", notes.join(", ")));
                    }
                }
            }
        }
    }
    if lines.is_empty() {
        println!("anomalies none: no loss, no retransmission, no short write, nothing dropped");
    } else {
        println!("anomalies");
        for l in lines {
            println!("  {l}");
        }
    }
    // Per-frame detail of the receive side: how big the frames were.
    for (k, test) in tests.iter().enumerate() {
        let role = test.role;
        if role != Role::Receive {
            continue;
        }
        let ok: Vec<&TestResult> = results[k].iter().filter_map(|r| r.as_ref().ok()).collect();
        let frames: u64 = ok.iter().map(|r| r.interval.data_frames).sum();
        let bytes: u64 = ok.iter().map(|r| r.interval.data_bytes).sum();
        let gso: u64 = ok.iter().map(|r| r.interval.gso_frames).sum();
        let buffers: u64 = ok.iter().map(|r| r.interval.rx_buffers).sum();
        let acks: u64 = ok.iter().map(|r| r.interval.acks).sum();
        if frames > 0 {
            println!(
                "{} {} {}p host→guest: {:.0} payload bytes per frame, {:.0}% GSO frames, {:.1} \
                 RX buffers per frame, {:.1} frames per guest ACK",
                test.target.name(),
                test.mode.name(),
                test.pairs,
                bytes as f64 / frames as f64,
                gso as f64 / frames as f64 * 100.0,
                buffers as f64 / frames as f64,
                frames as f64 / acks.max(1) as f64
            );
        }
    }
    for (k, test) in tests.iter().enumerate() {
        let role = test.role;
        if role != Role::Send {
            continue;
        }
        let ok: Vec<&TestResult> = results[k].iter().filter_map(|r| r.as_ref().ok()).collect();
        let frames: u64 = ok.iter().map(|r| r.interval.data_frames).sum();
        let acks: u64 = ok.iter().map(|r| r.interval.acks).sum();
        let bytes: u64 = ok.iter().map(|r| r.interval.data_bytes).sum();
        if frames > 0 {
            println!(
                "{} {} {}p guest→host: {:.0} payload bytes per frame, {:.1} frames per backend \
                 ACK, backend announced MSS {}",
                test.target.name(),
                test.mode.name(),
                test.pairs,
                bytes as f64 / frames as f64,
                frames as f64 / acks.max(1) as f64,
                ok.first()
                    .and_then(|r| r.backend_mss)
                    .map_or("-".into(), |m| m.to_string())
            );
        }
    }
    ok
}
