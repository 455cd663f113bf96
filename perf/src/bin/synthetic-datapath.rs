//! synthetic-datapath: the backend's data path alone. A synthetic vhost-user guest (the `vhost`
//! crate's frontend, shared memory, split rings, a minimal TCP on raw frames) sends to and
//! receives from a TCP server on host loopback through `vhost-net-user`, with and without
//! offloads, and host-loopback iperf3 runs beside it as the ceiling. See `perf/README.md`.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};
use vnu_perf::synth::peer::{Pattern, Peer, PeerRole};
use vnu_perf::synth::ring::{Driver, DriverConfig, MAX_QUEUE_SIZE};
use vnu_perf::synth::session::{Counters, Mark, Role, Session, SessionConfig};
use vnu_perf::synth::wire;
use vnu_perf::{
    IperfServer, binary_description, clock_ticks_per_second, cpu_seconds, load_average, median,
    parse_stat_ticks, parse_summary,
};
use vnu_tests::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "synthetic-datapath",
    about = "vhost-net-user's data path alone: a synthetic vhost-user guest sends to and receives \
             from host loopback, with host-loopback iperf3 as the ceiling"
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

    /// Which feature sets to test (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Offload, Mode::Plain])]
    modes: Vec<Mode>,

    /// Which directions to test (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Dir::GuestToHost, Dir::HostToGuest])]
    directions: Vec<Dir>,

    /// Also negotiate VIRTIO_RING_F_EVENT_IDX (QEMU guests do): notification suppression both
    /// ways.
    #[arg(long)]
    event_idx: bool,

    /// Descriptors per virtqueue (QEMU's default is 256).
    #[arg(long, default_value_t = 256)]
    queue_size: u16,

    /// Bytes per RX buffer [default: 4096 with offloads, 1536 without, as Linux sizes its
    /// mergeable buffers].
    #[arg(long)]
    rx_buffer: Option<u32>,

    /// Largest TCP payload of one TSO frame (44 segments of 1460 by default).
    #[arg(long, default_value_t = 64240)]
    tso_payload: usize,

    /// Receive window the guest advertises, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    rcv_window: u32,

    /// Do not check received bytes against the pattern (the guest then never reads payload).
    #[arg(long)]
    no_verify: bool,

    /// Skip the host-loopback iperf3 ceiling.
    #[arg(long)]
    no_ceiling: bool,

    /// Pass this argument to vhost-net-user (repeat for more).
    #[arg(long = "backend-arg", value_name = "ARG", allow_hyphen_values = true)]
    backend_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// VERSION_1, MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4, GUEST_TSO4.
    Offload,
    /// VERSION_1, MRG_RXBUF only: MTU-sized frames with complete checksums.
    Plain,
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
            Mode::Offload => 4096,
            Mode::Plain => 1536,
        }
    }
}

fn direction_label(role: Role) -> &'static str {
    match role {
        Role::Send => "guest→host",
        Role::Receive => "host→guest",
    }
}

/// CPU time of the backend, this (driver) thread and the peer thread at one mark.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    backend: Option<f64>,
    driver: Option<f64>,
    peer: Option<f64>,
    peer_bytes: u64,
}

/// One test's figures over its measured interval.
#[derive(Debug, Clone, Default)]
struct TestResult {
    seconds: f64,
    bytes: u64,
    frames: u64,
    backend_cpu: Option<f64>,
    driver_cpu: Option<f64>,
    peer_cpu: Option<f64>,
    /// Driver counters over the interval, and over the whole test (for anomalies).
    interval: Counters,
    whole: Counters,
    kicks: [u64; 2],
    wakeups: u64,
    /// The backend's counters for this connection (its `connection summary` line).
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
        Some(self.backend_cpu? / (self.bytes as f64 / 1e9)).filter(|_| self.bytes > 0)
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
    let bin = vnu_perf::release_backend()?;
    // The harness's Backend prefers VNU_BIN, then target/release: the same binary.
    let extra: Vec<&str> = args.backend_args.iter().map(String::as_str).collect();
    let mut backend = Backend::start(&extra).map_err(|e| e.to_string())?;
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
    println!("backend   {}", binary_description(&bin));
    println!(
        "driver    queue size {}, RX buffers {}, TSO payload up to {} B, receive window {} B, \
         EVENT_IDX {}, payload checked: {}",
        args.queue_size,
        args.rx_buffer
            .map_or("4096 (offload) / 1536 (plain)".into(), |b| b.to_string()),
        args.tso_payload,
        args.rcv_window,
        if args.event_idx { "on" } else { "off" },
        if args.no_verify { "no" } else { "yes" }
    );
    println!(
        "tests     {} runs of {} s (after {} s warm-up) per mode and direction\n",
        args.runs, args.time, args.warmup
    );

    let mut pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
    let tests: Vec<(Mode, Role)> = args
        .modes
        .iter()
        .flat_map(|&m| {
            args.directions.iter().map(move |d| match d {
                Dir::GuestToHost => (m, Role::Send),
                Dir::HostToGuest => (m, Role::Receive),
            })
        })
        .collect();
    let mut results: Vec<Vec<Result<TestResult, String>>> = vec![Vec::new(); tests.len()];
    let mut ceiling: Vec<Result<f64, String>> = Vec::new();
    let mut local_port = 40000u16;
    let started = Instant::now();
    for run in 0..args.runs {
        eprintln!("synthetic-datapath: run {}/{}", run + 1, args.runs);
        if !args.no_ceiling {
            ceiling.push(loopback_ceiling(args.time + args.warmup));
        }
        for (k, &(mode, role)) in tests.iter().enumerate() {
            local_port = local_port.wrapping_add(1).max(40000);
            let r = run_test(
                &mut backend,
                &mut pattern,
                args,
                mode,
                role,
                local_port,
                ticks,
            );
            if let Err(e) = &r {
                eprintln!(
                    "synthetic-datapath: {} {} failed: {e}",
                    mode.name(),
                    direction_label(role)
                );
            }
            results[k].push(r);
            if !backend.is_running() {
                return Err(format!(
                    "the backend exited during {} {}:\n{}",
                    mode.name(),
                    direction_label(role),
                    vnu_tests::tail(&backend.log(), 20)
                ));
            }
        }
    }
    let ceiling_gbit: Vec<f64> = ceiling
        .iter()
        .filter_map(|c| c.as_ref().ok().copied())
        .collect();
    let ceiling_median = median(&ceiling_gbit);
    print_table(&tests, &results, ceiling_median);
    println!();
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
    let ok = print_anomalies(&tests, &results);
    Ok(ok)
}

/// One synthetic test: a fresh vhost-user connection, a fresh peer.
fn run_test(
    backend: &mut Backend,
    pattern: &mut Pattern,
    args: &Args,
    mode: Mode,
    role: Role,
    local_port: u16,
    ticks: u64,
) -> Result<TestResult, String> {
    let peer = Peer::start(match role {
        Role::Send => PeerRole::Sink {
            verify: !args.no_verify,
        },
        Role::Receive => PeerRole::Source,
    })?;
    let summaries_before = summary_lines(&backend.log()).len();
    let mut driver = Driver::connect(
        backend.socket(),
        DriverConfig {
            features: mode.features(args.event_idx),
            queue_size: args.queue_size,
            rx_buffer: args.rx_buffer.unwrap_or(mode.rx_buffer()),
            pattern_len: pattern.bytes().len(),
        },
    )?;
    driver
        .memory()
        .write_slice(pattern.bytes(), GuestAddress(driver.pattern_addr()))
        .map_err(|e| format!("guest memory: {e}"))?;
    let backend_pid = backend.pid();
    let mut samples = [Sample::default(); 2];
    let sample = |peer: &Peer| Sample {
        backend: cpu_seconds(backend_pid, ticks),
        driver: thread_cpu("/proc/thread-self/stat", ticks),
        peer: thread_cpu(&format!("/proc/self/task/{}/stat", peer.tid()), ticks),
        peer_bytes: peer.bytes(),
    };
    let config = SessionConfig {
        role,
        offload: mode == Mode::Offload,
        tso_payload: args.tso_payload,
        rcv_window: args.rcv_window,
        verify: !args.no_verify,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.time),
        port: peer.port(),
        local_port,
    };
    let session = Session::new(&mut driver, pattern, config);
    let outcome = session.run(|m| {
        let i = match m {
            Mark::Start => 0,
            Mark::End => 1,
        };
        samples[i] = sample(&peer);
    });
    // Disconnecting ends the backend's side of the connection; its counters follow in the log.
    drop(driver);
    let peer_result = peer.finish();
    let summary = wait_summary(backend, summaries_before);
    let outcome = outcome.map_err(|e| match &summary {
        Some(s) => format!("{e}\n  backend: {s}"),
        None => e,
    })?;
    peer_result?;

    let (t0, c0) = outcome.start;
    let (t1, c1) = outcome.end;
    let [s0, s1] = samples;
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let bytes = match role {
        Role::Send => s1.peer_bytes - s0.peer_bytes,
        Role::Receive => c1.data_bytes - c0.data_bytes,
    };
    Ok(TestResult {
        seconds: (t1 - t0).as_secs_f64(),
        bytes,
        frames: c1.data_frames - c0.data_frames,
        backend_cpu: diff(s0.backend, s1.backend),
        driver_cpu: diff(s0.driver, s1.driver),
        peer_cpu: diff(s0.peer, s1.peer),
        interval: counters_diff(&c0, &c1),
        whole: c1,
        kicks: outcome.kicks,
        wakeups: outcome.wakeups,
        backend_summary: summary,
    })
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
    }
}

/// CPU seconds of one thread from its `stat` file.
fn thread_cpu(path: &str, ticks: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    Some(parse_stat_ticks(&stat)? as f64 / ticks as f64)
}

const SUMMARY_MARK: &str = "connection summary: ";

fn summary_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(SUMMARY_MARK).map(|s| s.1.to_owned()))
        .collect()
}

/// Waits (up to 3 s) for the backend to log the summary of the connection that just ended.
fn wait_summary(backend: &Backend, before: usize) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let lines = summary_lines(&backend.log());
        if lines.len() > before {
            return lines.last().cloned();
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

fn print_table(
    tests: &[(Mode, Role)],
    results: &[Vec<Result<TestResult, String>>],
    ceiling: Option<f64>,
) {
    println!(
        "{:<8} {:<11} {:>7} {:<17} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8} {:>8}",
        "mode",
        "direction",
        "Gbit/s",
        "runs",
        "frames/s",
        "MSS/s",
        "ceiling",
        "backend",
        "s/GB",
        "driver",
        "peer",
        "kicks/s",
        "irqs/s"
    );
    for (k, &(mode, role)) in tests.iter().enumerate() {
        let ok: Vec<&TestResult> = results[k].iter().filter_map(|r| r.as_ref().ok()).collect();
        let med = |f: &dyn Fn(&TestResult) -> Option<f64>| {
            median(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        let gbit = med(&|r| Some(r.gbit()));
        let runs: Vec<String> = results[k]
            .iter()
            .map(|r| {
                r.as_ref()
                    .map_or("fail".into(), |r| format!("{:.2}", r.gbit()))
            })
            .collect();
        let pct = |f: &dyn Fn(&TestResult) -> Option<f64>| {
            med(&|r| Some(f(r)? / r.seconds * 100.0)).map(|p| format!("{p:.0}%"))
        };
        println!(
            "{:<8} {:<11} {:>7} {:<17} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8} {:>8}",
            mode.name(),
            direction_label(role),
            fmt(gbit, 2),
            runs.join(" "),
            rate(med(&|r| Some(r.frames_per_s()))),
            rate(med(&|r| Some(
                r.bytes as f64 / f64::from(wire::MSS) / r.seconds
            ))),
            match (gbit, ceiling) {
                (Some(g), Some(c)) if c > 0.0 => format!("{:.0}%", g / c * 100.0),
                _ => "-".into(),
            },
            pct(&|r| r.backend_cpu).unwrap_or("-".into()),
            fmt(med(&|r| r.backend_per_gb()), 3),
            pct(&|r| r.driver_cpu).unwrap_or("-".into()),
            pct(&|r| r.peer_cpu).unwrap_or("-".into()),
            rate(med(&|r| Some((r.kicks[0] + r.kicks[1]) as f64 / r.seconds))),
            rate(med(&|r| Some(r.wakeups as f64 / r.seconds))),
        );
    }
}

/// Lists what went wrong or looks wrong: failed tests, the sender going back, gaps in what
/// arrived, and the backend's own short writes, drops and retransmissions. Returns false if
/// any test failed.
fn print_anomalies(tests: &[(Mode, Role)], results: &[Vec<Result<TestResult, String>>]) -> bool {
    let mut ok = true;
    let mut lines = Vec::new();
    for (k, &(mode, role)) in tests.iter().enumerate() {
        for (run, r) in results[k].iter().enumerate() {
            let name = format!("{} {} run {}", mode.name(), direction_label(role), run + 1);
            match r {
                Err(e) => {
                    ok = false;
                    lines.push(format!("{name}: FAILED: {e}"));
                }
                Ok(r) => {
                    let w = &r.whole;
                    let mut notes = Vec::new();
                    for (what, n) in [
                        ("sender went back after 3 duplicate ACKs", w.go_back_dupack),
                        ("sender went back after a timeout", w.go_back_timeout),
                        ("segments after a gap", w.out_of_order),
                        ("duplicate segments", w.duplicate),
                    ] {
                        if n > 0 {
                            notes.push(format!("{what}: {n}"));
                        }
                    }
                    if let Some(s) = &r.backend_summary {
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
    for (k, &(mode, role)) in tests.iter().enumerate() {
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
                "{} host→guest: {:.0} payload bytes per frame, {:.0}% GSO frames, {:.1} RX \
                 buffers per frame, {:.1} frames per guest ACK",
                mode.name(),
                bytes as f64 / frames as f64,
                gso as f64 / frames as f64 * 100.0,
                buffers as f64 / frames as f64,
                frames as f64 / acks.max(1) as f64
            );
        }
    }
    for (k, &(mode, role)) in tests.iter().enumerate() {
        if role != Role::Send {
            continue;
        }
        let ok: Vec<&TestResult> = results[k].iter().filter_map(|r| r.as_ref().ok()).collect();
        let frames: u64 = ok.iter().map(|r| r.interval.data_frames).sum();
        let acks: u64 = ok.iter().map(|r| r.interval.acks).sum();
        let bytes: u64 = ok.iter().map(|r| r.interval.data_bytes).sum();
        if frames > 0 {
            println!(
                "{} guest→host: {:.0} payload bytes per frame, {:.1} frames per backend ACK",
                mode.name(),
                bytes as f64 / frames as f64,
                frames as f64 / acks.max(1) as f64
            );
        }
    }
    ok
}
