//! compare-backends: the test guest behind QEMU slirp, Debian 12's passt (socket link), Debian
//! 13's passt (socket link and vhost-user), the backend's stream link and its vhost-user ring
//! path (with one queue pair, and with several: vnu-ring-mq), one boot each per round: iperf3
//! both ways (one stream, 16 streams, UDP), request/response latency, TCP connection rate, and
//! the backend's and the guest's CPU per GB, as a table and an SVG chart.
//!
//! Everything the guest reaches is on the host's loopback through the gateway address
//! (10.0.2.2). Each passt runs in a private network namespace whose default route leads nowhere
//! (it refuses to start without one), with its servers on that namespace's loopback; Debian
//! 13's passt runs from the root `scripts/debian13.sh` enters, which shares /tmp (its socket)
//! with the host. See `perf/README.md` for what each column means.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use vnu_perf::connrate::{self, Rate};
use vnu_perf::echo::{self, EchoServer, Exchanges};
use vnu_perf::procs::{Daemon, Netns};
use vnu_perf::svg::{self, Panel};
use vnu_perf::{
    Direction, GATEWAY, IperfServer, TOP_THREADS, TestOutput, Watched, Window, binary_description,
    clock_ticks_per_second, load_average, machine_description, median, parse_guest_output,
};
use vnu_tests::{Backend, GuestOpts, Net, TempDir};

#[derive(Parser, Debug)]
#[command(
    name = "compare-backends",
    about = "One TCG guest behind QEMU slirp, passt (Debian 12; Debian 13 socket and vhost-user), \
             and vhost-net-user's stream and ring links: \
             iperf3 TCP (1 and 16 streams) and UDP both ways, request/response latency, \
             TCP connection rate, backend and guest CPU per GB"
)]
struct Args {
    /// Rounds: each boots every backend once for one run of each test; the tables show
    /// medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,

    /// Seconds per iperf3 test (iperf3 -t).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=120))]
    time: u32,

    /// Which tests to run (comma-separated): `bulk` (iperf3 TCP both ways), `rr`
    /// (request/response latency), `connrate` (TCP connections per second), `udp` (iperf3 -u
    /// both ways unlimited, then offered what that received), `streams16` (iperf3 -P 16 both
    /// ways).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bulk,rr,connrate,udp,streams16"
    )]
    tests: Vec<TestSet>,

    /// vCPUs of every backend's guest (QEMU -smp).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    smp: u32,

    /// Queue pairs vnu-ring-mq asks for (`-netdev vhost-user,queues=N`; the guest uses as many
    /// as it has vCPUs, see --smp).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    queues: u32,

    /// Datagram size of the UDP tests (iperf3 -l): below the smallest MTU any backend gives
    /// (1500), so no datagram is fragmented.
    #[arg(long, value_name = "BYTES", default_value_t = 1400, value_parser = clap::value_parser!(u32).range(64..=65000))]
    udp_len: u32,

    /// Offered rate of the UDP tests (iperf3 -b): 0 is unlimited, the sender's fastest (the
    /// guest's, or the host's through loopback, which outruns any TCG guest: most of it is
    /// lost); e.g. `500M` to compare loss at one offered load.
    #[arg(long, value_name = "RATE", default_value = "0")]
    udp_rate: String,

    /// Request/response exchanges per latency run.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    exchanges: u32,

    /// Measure only these backends (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Kind>,

    /// Where to write the SVG chart [default: target/perf/backends.svg].
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,

    /// Pass this argument to vhost-net-user, both links (repeat for more).
    #[arg(long = "backend-arg", value_name = "ARG", allow_hyphen_values = true)]
    backend_args: Vec<String>,

    /// Pass this argument to passt (repeat for more), e.g. `--passt-arg=--mtu --passt-arg=1500`.
    #[arg(long = "passt-arg", value_name = "ARG", allow_hyphen_values = true)]
    passt_args: Vec<String>,

    /// A boot whose iperf3 tests saw more than this share of the machine's CPU taken by the
    /// hypervisor (`steal %`) is measured again, up to --steal-retries times: on a shared
    /// virtual machine, other tenants would otherwise decide which backend looks faster.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    max_steal: f64,

    /// How often one round of one backend may be measured again for steal (0: never).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    steal_retries: u32,

    /// Extra `-device virtio-net-pci` properties for every backend, e.g. `mrg_rxbuf=off`.
    #[arg(long = "device-opts", value_name = "PROPS", default_value = "")]
    device_opts: String,

    /// Internal: run the latency test's server for COUNT exchanges (the benchmark starts
    /// itself this way, inside passt's namespace too).
    #[arg(long = "serve-rr", value_name = "COUNT", hide = true)]
    serve_rr: Option<usize>,

    /// Internal: run the connection-rate test's server (until the guest tool's last
    /// connection, or until killed).
    #[arg(long = "serve-conn", hide = true)]
    serve_conn: bool,
}

/// Groups of tests `--tests` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TestSet {
    Bulk,
    Rr,
    Connrate,
    Udp,
    Streams16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// QEMU's own `-netdev user`.
    #[value(name = "qemu-slirp")]
    Slirp,
    /// Debian's passt, socket mode, through QEMU `-netdev stream`.
    #[value(name = "passt")]
    Passt,
    /// Debian 13's passt (from the root `scripts/debian13.sh` keeps), socket mode.
    #[value(name = "passt13")]
    Passt13,
    /// Debian 13's passt in vhost-user mode, through QEMU `-netdev vhost-user` exactly as the
    /// ring path: the peer the ring path is compared with.
    #[value(name = "passt13-vu")]
    Passt13VhostUser,
    /// vhost-net-user --stream, through QEMU `-netdev stream`.
    #[value(name = "vnu-stream")]
    Stream,
    /// vhost-net-user over vhost-user (the default link).
    #[value(name = "vnu-ring")]
    Ring,
    /// vnu-ring with --queues queue pairs (`queues=N`, `mq=on`).
    #[value(name = "vnu-ring-mq")]
    RingMq,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Slirp,
        Kind::Passt,
        Kind::Passt13,
        Kind::Passt13VhostUser,
        Kind::Stream,
        Kind::Ring,
        Kind::RingMq,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Slirp => "qemu-slirp",
            Kind::Passt => "passt",
            Kind::Passt13 => "passt13",
            Kind::Passt13VhostUser => "passt13-vu",
            Kind::Stream => "vnu-stream",
            Kind::Ring => "vnu-ring",
            Kind::RingMq => "vnu-ring-mq",
        }
    }

    /// Which passt runs this backend, if one does.
    fn passt(self) -> Option<PasstFlavour> {
        match self {
            Kind::Passt => Some(PasstFlavour::Host),
            Kind::Passt13 => Some(PasstFlavour::Debian13 { vhost_user: false }),
            Kind::Passt13VhostUser => Some(PasstFlavour::Debian13 { vhost_user: true }),
            Kind::Slirp | Kind::Stream | Kind::Ring | Kind::RingMq => None,
        }
    }
}

/// A passt to run: the host's (Debian 12's, from PATH), or Debian 13's inside the root
/// `scripts/debian13.sh` enters (the same pid: that script execs its way to passt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PasstFlavour {
    Host,
    Debian13 { vhost_user: bool },
}

/// `scripts/debian13.sh`, which runs a command inside the Debian 13 root.
fn debian13_script() -> PathBuf {
    vnu_tests::workspace_root().join("scripts/debian13.sh")
}

/// What an iperf3 test sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// One TCP stream.
    Tcp,
    /// UDP at iperf3's highest rate (`-u -b 0`).
    Udp,
    /// UDP offered at a share (percent) of the rate the `Udp` test of the same direction
    /// received, just before in the same boot: 100, then 150 and 200, for the highest rate the
    /// backend sustains and the loss at each (see [`sustained`]).
    UdpFit(u16),
    /// 16 TCP streams at once (`-P 16`).
    Streams,
}

impl Load {
    /// The shares of the unlimited rate the `fit` tests offer, in percent.
    const FIT_STEPS: [u16; 3] = [100, 150, 200];
    const ALL: [Load; 6] = [
        Load::Tcp,
        Load::Streams,
        Load::Udp,
        Load::UdpFit(100),
        Load::UdpFit(150),
        Load::UdpFit(200),
    ];

    /// The iperf3 client flags.
    fn flags(self, args: &Args) -> String {
        match self {
            Load::Tcp => String::new(),
            Load::Udp => format!(" -u -b {} -l {}", args.udp_rate, args.udp_len),
            // `m K` (see `guest_script`): test K's received Mbit/s.
            Load::UdpFit(_) => format!(" -u -l {}", args.udp_len),
            Load::Streams => " -P 16".into(),
        }
    }

    fn label(self, direction: Direction) -> String {
        match self {
            Load::Tcp => direction.label().to_owned(),
            Load::Udp => format!("UDP {}", direction.label()),
            Load::UdpFit(100) => format!("UDP fit {}", direction.label()),
            Load::UdpFit(percent) => format!(
                "UDP fit {}x {}",
                f64::from(percent) / 100.0,
                direction.label()
            ),
            Load::Streams => format!("16x {}", direction.label()),
        }
    }
}

/// What one guest test was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestKind {
    Iperf(Load, Direction),
    Latency,
    ConnRate,
}

/// The tests of one boot, in order.
fn test_plan(sets: &[TestSet]) -> Vec<TestKind> {
    let mut plan = Vec::new();
    let both = |load| Direction::BOTH.map(|d| TestKind::Iperf(load, d));
    for set in [
        TestSet::Bulk,
        TestSet::Rr,
        TestSet::Connrate,
        TestSet::Udp,
        TestSet::Streams16,
    ] {
        if !sets.contains(&set) {
            continue;
        }
        match set {
            TestSet::Bulk => plan.extend(both(Load::Tcp)),
            TestSet::Rr => plan.push(TestKind::Latency),
            TestSet::Connrate => plan.push(TestKind::ConnRate),
            TestSet::Udp => {
                plan.extend(both(Load::Udp));
                for percent in Load::FIT_STEPS {
                    plan.extend(both(Load::UdpFit(percent)));
                }
            }
            TestSet::Streams16 => plan.extend(both(Load::Streams)),
        }
    }
    plan
}

/// A latency run as the guest and the host saw it.
#[derive(Debug, Clone, Default)]
struct Latency {
    /// From the echo server: timed on the host.
    host: Option<Exchanges>,
    /// The guest's `rr K:` line (nc's exit status), for errors.
    guest: Option<String>,
}

#[derive(Debug)]
struct Test {
    kind: TestKind,
    output: TestOutput,
    window: Option<Window>,
    latency: Latency,
    /// The guest's busy CPU seconds over an iperf3 test (all vCPUs; from its /proc/stat).
    guest_cpu: Option<GuestCpu>,
    /// A connection-rate test's result, or what went wrong.
    conn: Result<Rate, String>,
    /// The guest's TCP and UDP drop and retransmission counters that moved during the test.
    guest_drops: Vec<(String, u64)>,
}

/// The guest's counters (`/proc/net/netstat`, `/proc/net/snmp`; the UDP ones prefixed `Udp`)
/// the report shows: where it dropped what a backend sent it (TCP receive memory, pruning; a
/// full UDP socket), and its own TCP retransmissions. An awk pattern.
const GUEST_DROP_COUNTERS: &str = "^(TCPRcvQDrop|TCPOFODrop|TCPZeroWindowDrop|TCPBacklogDrop|PruneCalled|TCPMemoryPressures|RetransSegs|TCPTimeouts|UdpInErrors|UdpRcvbufErrors)$";

/// An awk program that prints the guest's TCP and UDP counters a line each, `NAME VALUE`, from
/// `/proc/net/netstat` and `/proc/net/snmp` (each table a line of names, then one of values).
/// UDP's get the prefix `Udp`: their names (`InErrors`) are also other tables'.
const GUEST_COUNTER_LINES: &str = r#"/^Tcp/ || /^Udp:/ { if (!h[$1]) { split($0, k); h[$1] = 1 } else for (i = 2; i <= NF; i++) print ($1 == "Udp:" ? "Udp" : "") k[i], $i }"#;

/// The counters of a `gdrops K: NAME=DELTA ...` line.
fn guest_drops(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace()
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Everything measured behind one backend.
#[derive(Debug)]
struct Measured {
    kind: Kind,
    tests: Vec<Test>,
    /// The guest's interface MTU (passt hands out 65520 by DHCP).
    mtu: Option<String>,
    /// The backend's own counters, logged when the guest disconnected (vhost-net-user only).
    summary: Option<String>,
    load: String,
    error: Option<String>,
    /// Boots measured again because the hypervisor took too much of the machine, with the
    /// steal each saw.
    repeated: Vec<f64>,
    /// The guest's `ethtool -S eth0` packet counters per queue (`rx_queue_0_packets`, ...),
    /// summed over its boots: which queue pairs carried the traffic.
    queues: Vec<(String, u64)>,
    /// vCPUs the guest saw.
    cpus: Option<String>,
}

impl Measured {
    /// The most steal any iperf3 test of this measurement saw, in percent.
    fn worst_steal(&self) -> f64 {
        self.tests
            .iter()
            .filter_map(|t| t.window?.steal_percent)
            .fold(0.0, f64::max)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.serve_conn {
        return match connrate::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("connection-rate server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(count) = args.serve_rr {
        return match echo::serve(count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("compare-backends: some tests gave no result (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compare-backends: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    if !is_rate(&args.udp_rate) {
        eprintln!(
            "compare-backends: --udp-rate {:?} is not a rate (e.g. 0, 800M, 2G)",
            args.udp_rate
        );
        std::process::exit(2);
    }
    let kinds: Vec<Kind> = if args.only.is_empty() {
        // Debian 12's passt is the old peer: a machine without it still measures the others
        // (asked for by name with --only, its absence is an error below).
        let host_passt = vnu_tests::find_program("passt").is_some();
        if !host_passt {
            eprintln!("compare-backends: passt (Debian 12's) not installed; leaving it out");
        }
        // A guest with one vCPU uses one queue pair: vnu-ring-mq would be vnu-ring again.
        Kind::ALL
            .into_iter()
            .filter(|&k| k != Kind::Passt || host_passt)
            .filter(|&k| k != Kind::RingMq || args.smp > 1)
            .collect()
    } else {
        Kind::ALL
            .into_iter()
            .filter(|k| args.only.contains(k))
            .collect()
    };
    let qemu = vnu_tests::qemu_bin();
    for (program, package) in [
        (qemu.as_str(), "qemu-system-x86"),
        ("iperf3", "iperf3"),
        ("stdbuf", "coreutils"),
    ] {
        if vnu_tests::find_program(program).is_none() {
            return Err(format!("{program} not found (apt-get install {package})"));
        }
    }
    if kinds.contains(&Kind::Passt) {
        for (program, package) in [("passt", "passt"), ("ip", "iproute2")] {
            if vnu_tests::find_program(program).is_none() {
                return Err(format!(
                    "{program} not found (apt-get install {package}, or leave passt out with \
                     --only)"
                ));
            }
        }
    }
    let debian13 = kinds
        .iter()
        .any(|k| matches!(k.passt(), Some(PasstFlavour::Debian13 { .. })));
    if debian13 {
        if vnu_tests::find_program("ip").is_none() {
            return Err("ip not found (apt-get install iproute2)".into());
        }
        // Builds the root once if it is missing (about a minute), before anything is timed.
        vnu_perf::procs::run(
            &debian13_script().display().to_string(),
            &["--build-only"],
        )
        .map_err(|e| {
            format!("the Debian 13 root for passt13 and passt13-vu (leave them out with --only): {e}")
        })?;
    }
    let bin = if kinds
        .iter()
        .any(|k| matches!(k, Kind::Stream | Kind::Ring | Kind::RingMq))
    {
        Some(vnu_perf::release_backend()?)
    } else {
        None
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let ticks = clock_ticks_per_second()?;
    let plan = test_plan(&args.tests);
    let tool = if plan.contains(&TestKind::ConnRate) {
        Some(connrate::build_guest_tool()?)
    } else {
        None
    };
    let env = Env {
        args,
        bin: bin.as_deref(),
        exe: &exe,
        ticks,
        plan: &plan,
        tool: tool.as_deref(),
    };

    let mut header = vec![machine_description(&qemu)];
    if let Some(bin) = &bin {
        header.push(format!("backend   {}", binary_description(bin)));
    }
    if kinds.contains(&Kind::Passt) {
        header.push(format!("passt     {}", passt_version(PasstFlavour::Host)));
    }
    if debian13 {
        header.push(format!(
            "passt13   {} (Debian 13 root)",
            passt_version(PasstFlavour::Debian13 { vhost_user: true })
        ));
    }
    let mut tests = Vec::new();
    if args.tests.contains(&TestSet::Bulk) {
        tests.push(format!(
            "iperf3 -t {} -f m to {GATEWAY} (host 127.0.0.1) each way",
            args.time
        ));
    }
    if args.tests.contains(&TestSet::Rr) {
        tests.push(format!(
            "{} request/response exchanges of {} bytes on one TCP connection from the guest \
             (busybox `nc -e cat` echoes, the host times)",
            args.exchanges,
            echo::MESSAGE_LEN
        ));
    }
    if args.tests.contains(&TestSet::Connrate) {
        tests.push(format!(
            "{} s of TCP connections from the guest (vnu-connrate: connect, {} bytes each way, \
             the host closes)",
            args.time,
            connrate::MESSAGE_LEN
        ));
    }
    if args.tests.contains(&TestSet::Udp) {
        tests.push(format!(
            "iperf3 -u -b {} -l {} each way, then each way again offered what that received",
            args.udp_rate, args.udp_len
        ));
    }
    if args.tests.contains(&TestSet::Streams16) {
        tests.push("iperf3 -P 16 each way".into());
    }
    header.push(format!(
        "tests     {} rounds, each booting every backend in turn (one later each round; guest \
         -smp {}, vnu-ring-mq queues={}) for one run of: {}",
        args.runs,
        args.smp,
        args.queues,
        tests.join("; ")
    ));
    println!("{}\n", header.join("\n"));

    let started = Instant::now();
    let mut results: Vec<Measured> = kinds
        .iter()
        .map(|&kind| Measured {
            kind,
            tests: Vec::new(),
            mtu: None,
            summary: None,
            load: String::new(),
            error: None,
            repeated: Vec::new(),
            queues: Vec::new(),
            cpus: None,
        })
        .collect();
    // Round by round, every backend boots once for one run of each test, starting one backend
    // later each round: this machine slows down under sustained load, and a backend always
    // measured last would always be measured slowest.
    for round in 0..args.runs as usize {
        for turn in 0..kinds.len() {
            let slot = &mut results[(round + turn) % kinds.len()];
            if slot.error.is_some() {
                continue;
            }
            let mut measured = measure(slot.kind, &env);
            for _ in 0..args.steal_retries {
                let steal = match &measured {
                    Ok(m) => m.worst_steal(),
                    Err(_) => break,
                };
                if steal <= args.max_steal {
                    break;
                }
                eprintln!(
                    "compare-backends: {} saw {steal:.0}% steal (more than --max-steal {}); \
                     measuring it again",
                    slot.kind.name(),
                    args.max_steal
                );
                slot.repeated.push(steal);
                measured = measure(slot.kind, &env);
            }
            match measured {
                Ok(m) => {
                    if slot.load.is_empty() {
                        slot.load = m.load;
                    }
                    slot.tests.extend(m.tests);
                    slot.mtu = slot.mtu.take().or(m.mtu);
                    slot.summary = m.summary.or(slot.summary.take());
                    slot.cpus = m.cpus.or(slot.cpus.take());
                    for (queue, packets) in m.queues {
                        match slot.queues.iter_mut().find(|(q, _)| *q == queue) {
                            Some((_, sum)) => *sum += packets,
                            None => slot.queues.push((queue, packets)),
                        }
                    }
                }
                Err(e) => {
                    if slot.load.is_empty() {
                        slot.load = load_average();
                    }
                    slot.error = Some(e);
                }
            }
        }
    }
    let end_load = load_average();
    let repeated: Vec<String> = results
        .iter()
        .filter(|m| !m.repeated.is_empty())
        .map(|m| {
            let steal: Vec<String> = m.repeated.iter().map(|s| format!("{s:.0}%")).collect();
            format!(
                "{} {} ({})",
                m.kind.name(),
                m.repeated.len(),
                steal.join(" ")
            )
        })
        .collect();

    print_summary(&results, &plan);
    println!();
    print_details(&results);
    println!();
    print_queues(&results);
    print_threads(&results);
    print_guest_drops(&results);
    println!(
        "\nload avg  {end_load} (at the end; total {:.0?})",
        started.elapsed()
    );
    if !repeated.is_empty() {
        println!(
            "repeated  boots measured again for steal above {}%: {}",
            args.max_steal,
            repeated.join(", ")
        );
    }
    let mut complete = true;
    for m in &results {
        if let Some(e) = &m.error {
            complete = false;
            println!("{}: {e}", m.kind.name());
        }
        if let Some(summary) = &m.summary {
            println!(
                "{} connection summary (its last boot): {summary}",
                m.kind.name()
            );
        }
        for (k, t) in m.tests.iter().enumerate() {
            let missing = match t.kind {
                TestKind::Iperf(..) => t.output.receiver.is_none(),
                TestKind::Latency => t.latency.host.is_none(),
                TestKind::ConnRate => t.conn.is_err(),
            };
            if missing {
                complete = false;
                println!(
                    "{} test {k} ({}) gave no result: {}{}{}",
                    m.kind.name(),
                    test_label(t.kind),
                    t.output.errors.join("; "),
                    t.latency.guest.as_deref().unwrap_or(""),
                    t.conn.as_ref().err().map_or("", String::as_str)
                );
            } else if let Ok(Rate {
                errors: 1..,
                first_error: Some(e),
                ..
            }) = &t.conn
            {
                println!(
                    "{} test {k} ({}): {} failed connections, the first: {e}",
                    m.kind.name(),
                    test_label(t.kind),
                    t.conn.as_ref().map_or(0, |r| r.errors)
                );
            }
        }
    }

    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| vnu_tests::target_dir().join("perf/backends.svg"));
    write_svg(&svg_path, &results, args, &end_load)?;
    println!("chart     {}", svg_path.display());
    Ok(complete)
}

/// Whether `rate` is a rate iperf3 -b takes: a number with an optional k, M or G.
fn is_rate(rate: &str) -> bool {
    let number = rate
        .strip_suffix(['k', 'K', 'm', 'M', 'g', 'G'])
        .unwrap_or(rate);
    number
        .parse::<f64>()
        .is_ok_and(|n| n.is_finite() && n >= 0.0)
}

/// The installed passt's package version (passt 2023 prints "unknown version" itself, passt
/// 2025 prints its version only to a terminal).
fn passt_version(flavour: PasstFlavour) -> String {
    let mut command = match flavour {
        PasstFlavour::Host => std::process::Command::new("dpkg-query"),
        PasstFlavour::Debian13 { .. } => {
            let mut c = std::process::Command::new(debian13_script());
            c.arg("dpkg-query");
            c
        }
    };
    command
        .args(["-W", "-f=${Version}", "passt"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!("Debian package {}", String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| "version unknown".into())
}

/// The network behind one backend, with the processes that serve it.
struct Setup {
    net: Net,
    /// The process whose CPU is the backend's (none for slirp: it runs inside QEMU).
    pid: Option<u32>,
    /// Prefix for host-side servers (`ip netns exec NS` for passt).
    prefix: Vec<String>,
    /// Queue pairs to ask a vhost-user backend for (`queues=N`, `mq=on`); none: one.
    queues: Option<u32>,
    // Guards, in drop order: processes before the namespace they run in, then the temp dir.
    daemon: Option<Daemon>,
    backend: Option<Backend>,
    _netns: Option<Netns>,
    _dir: Option<TempDir>,
}

fn stream_net(socket: &Path) -> Net {
    Net::Raw {
        args: vec![
            "-netdev".into(),
            format!(
                "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                socket.display()
            ),
        ],
        shared_memory: false,
        vectors: None,
    }
}

fn set_up(kind: Kind, args: &Args, bin: Option<&Path>) -> Result<Setup, String> {
    let mut setup = Setup {
        net: Net::slirp(),
        pid: None,
        prefix: Vec::new(),
        queues: None,
        daemon: None,
        backend: None,
        _netns: None,
        _dir: None,
    };
    match kind {
        Kind::Slirp => {}
        Kind::Ring | Kind::RingMq => {
            let extra: Vec<&str> = args.backend_args.iter().map(String::as_str).collect();
            let backend = Backend::start(&extra).map_err(|e| e.to_string())?;
            setup.net = backend.net();
            if kind == Kind::RingMq {
                setup.queues = Some(args.queues);
            }
            setup.pid = Some(backend.pid());
            setup.backend = Some(backend);
        }
        Kind::Stream => {
            let bin = bin.ok_or("no backend binary")?;
            let dir = TempDir::new("stream").map_err(|e| e.to_string())?;
            let socket = dir.join("stream.sock");
            let mut command = vec![
                bin.display().to_string(),
                "--stream".into(),
                socket.display().to_string(),
            ];
            command.extend(args.backend_args.iter().cloned());
            let daemon = Daemon::start(
                "vhost-net-user --stream",
                &command,
                &dir.join("backend.log"),
                &socket,
            )?;
            setup.net = stream_net(&socket);
            setup.pid = Some(daemon.pid());
            setup.daemon = Some(daemon);
            setup._dir = Some(dir);
        }
        Kind::Passt | Kind::Passt13 | Kind::Passt13VhostUser => {
            let flavour = kind.passt().ok_or("not a passt")?;
            let netns = Netns::with_dead_end_route("p")?;
            if flavour != PasstFlavour::Host {
                // passt 2025 answers the guest's pings through ping sockets, which the
                // namespace's default range ("1 0") refuses to its user, nobody.
                vnu_perf::procs::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        netns.name(),
                        "sysctl",
                        "-q",
                        "-w",
                        "net.ipv4.ping_group_range=0 2147483647",
                    ],
                )?;
            }
            let files = vnu_perf::PasstDir::new()?;
            let mut command = netns.exec_prefix();
            match flavour {
                PasstFlavour::Host => command.push("passt".into()),
                PasstFlavour::Debian13 { vhost_user } => {
                    command.push(debian13_script().display().to_string());
                    command.push("passt".into());
                    if vhost_user {
                        command.push("--vhost-user".into());
                    }
                    // As libvirt runs it: passt exits when QEMU goes away, so it does not
                    // outlive a benchmark killed before it could stop passt.
                    command.push("--one-off".into());
                }
            }
            command.extend(vnu_perf::passt_common_args(&files.socket, &files.pid_file));
            command.extend(args.passt_args.iter().cloned());
            let daemon = Daemon::start(kind.name(), &command, &files.log, &files.socket)?;
            let pid = files.pid(daemon.pid());
            let socket = files.socket.clone();
            setup.net = if flavour == (PasstFlavour::Debian13 { vhost_user: true }) {
                // Exactly the ring path's QEMU side: shared memfd memory, vectors=0.
                Net::VhostUser {
                    socket: socket.clone(),
                    reconnect: false,
                }
            } else {
                stream_net(&socket)
            };
            setup.pid = Some(pid);
            setup.prefix = netns.exec_prefix();
            setup.daemon = Some(daemon);
            setup._netns = Some(netns);
            setup._dir = Some(files.dir);
        }
    }
    Ok(setup)
}

/// The console line the guest's script prints first.
const SCRIPT_STARTED: &str = "run: mark=start";

/// How long a guest may take from QEMU's start to its script.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// What every measurement shares.
struct Env<'a> {
    args: &'a Args,
    bin: Option<&'a Path>,
    /// This program, which serves the latency and connection-rate tests.
    exe: &'a Path,
    ticks: u64,
    plan: &'a [TestKind],
    /// The guest's connection-rate tool, when that test runs.
    tool: Option<&'a Path>,
}

/// Host-side servers of one test.
enum Server {
    Iperf(IperfServer),
    Echo(EchoServer),
    /// The connection-rate server: the same kind of process as the echo server (it prints
    /// `listening PORT` and is killed on drop), which also marks its test's start and end as
    /// iperf3 does; the guest's tool reports the result.
    Conn(EchoServer),
}

/// The guest's network with the QEMU arguments `GuestOpts` has no field for: `-smp` (QEMU
/// takes the last `-smp` given, so it overrides the `-smp 1` before it), the fw_cfg file with
/// the connection-rate tool, and `queues=N` on a vhost-user netdev. Every kind of `Net` becomes
/// the `Net::Raw` that makes the same command line.
fn guest_net(net: Net, queues: Option<u32>, extra: Vec<String>) -> Net {
    let (mut args, shared_memory, vectors) = match net {
        Net::User(opts) => {
            let netdev = if opts.is_empty() {
                "user,id=n0".to_owned()
            } else {
                format!("user,id=n0,{opts}")
            };
            (vec!["-netdev".into(), netdev], false, None)
        }
        Net::VhostUser { socket, reconnect } => (
            vec![
                "-chardev".into(),
                format!(
                    "socket,id=c0,path={}{}",
                    socket.display(),
                    if reconnect { ",reconnect=1" } else { "" }
                ),
                "-netdev".into(),
                match queues {
                    Some(n) => format!("vhost-user,id=n0,chardev=c0,queues={n}"),
                    None => "vhost-user,id=n0,chardev=c0".into(),
                },
            ],
            // As `Net::VhostUser`: shared memory, and no MSI-X (QEMU 7.2 TCG).
            true,
            Some(0),
        ),
        Net::Raw {
            args,
            shared_memory,
            vectors,
        } => (args, shared_memory, vectors),
    };
    args.extend(extra);
    Net::Raw {
        args,
        shared_memory,
        vectors,
    }
}

fn measure(kind: Kind, env: &Env) -> Result<Measured, String> {
    let args = env.args;
    let load = load_average();
    let setup = set_up(kind, args, env.bin)?;
    let plan = env.plan;
    let server_command = |flag: &str, count: Option<u32>| {
        let mut command = setup.prefix.clone();
        command.push(env.exe.display().to_string());
        command.push(flag.into());
        command.extend(count.map(|c| c.to_string()));
        command
    };
    let echo_command = server_command(echo::SERVE_FLAG, Some(args.exchanges));
    let conn_command = server_command(connrate::SERVE_FLAG, None);
    let mut servers = plan
        .iter()
        .map(|t| match t {
            TestKind::Iperf(..) => IperfServer::start_in(&setup.prefix).map(Server::Iperf),
            TestKind::Latency => EchoServer::start(&echo_command).map(Server::Echo),
            TestKind::ConnRate => EchoServer::start(&conn_command).map(Server::Conn),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let script = guest_script(plan, &servers, args);

    let mut extra = vec!["-smp".to_owned(), args.smp.to_string()];
    if let Some(tool) = env.tool {
        extra.push("-fw_cfg".into());
        extra.push(format!(
            "name={},file={}",
            connrate::FW_CFG_NAME,
            tool.display()
        ));
    }
    let mut device_opts = args.device_opts.clone();
    if setup.queues.is_some() {
        if !device_opts.is_empty() {
            device_opts.push(',');
        }
        device_opts.push_str("mq=on");
    }
    let net = guest_net(setup.net.clone(), setup.queues, extra);
    let per_test = u64::from(args.time) + 40;
    let opts = GuestOpts::new(kind.name(), net)
        .script(&script)
        .device_opts(&device_opts)
        .timeout(Duration::from_secs(180 + per_test * plan.len() as u64));
    eprintln!(
        "compare-backends: booting the guest behind {} for {} tests",
        kind.name(),
        plan.len()
    );
    let started = Instant::now();
    let mut guest = vnu_tests::spawn(&opts).map_err(|e| e.to_string())?;
    // The watchers start at once: the first test begins as soon as the script does.
    let watched = Watched {
        backend: setup.pid,
        qemu: guest.pid(),
        ticks_per_second: env.ticks,
    };
    enum Watcher {
        Window(std::thread::JoinHandle<Option<Window>>),
        Echo(std::thread::JoinHandle<Option<Exchanges>>),
    }
    let watchers: Vec<Watcher> = servers
        .iter_mut()
        .map(|s| match s {
            Server::Iperf(s) => Watcher::Window(s.watch(watched)),
            Server::Echo(s) => Watcher::Echo(s.watch()),
            Server::Conn(s) => Watcher::Window(s.watch_window(watched)),
        })
        .collect();
    // A QEMU that cannot set up its netdev (e.g. more queues than the backend offers) retries
    // for ever without booting: give up on it after a boot's time, not the whole run's.
    if let Err(e) = guest.wait_for_line(SCRIPT_STARTED, BOOT_TIMEOUT) {
        let _ = std::process::Command::new("kill")
            .arg(guest.pid().to_string())
            .status();
        let qemu = guest.wait();
        // Killing the servers ends their watchers.
        drop(servers);
        drop(watchers);
        return Err(match qemu {
            Err(qemu) => format!("the guest's script did not start: {qemu}"),
            Ok(_) => format!("the guest's script did not start: {e}"),
        });
    }
    let run = guest.wait();
    // Kills the servers of tests that never ran, which ends their watchers.
    drop(servers);
    let mut windows = Vec::new();
    let mut exchanges = Vec::new();
    for w in watchers {
        match w {
            Watcher::Window(h) => {
                windows.push(h.join().unwrap_or(None));
                exchanges.push(None);
            }
            Watcher::Echo(h) => {
                windows.push(None);
                exchanges.push(h.join().unwrap_or(None));
            }
        }
    }
    let run = run.map_err(|e| e.to_string())?;
    eprintln!(
        "compare-backends: {} done in {:.0?}",
        kind.name(),
        started.elapsed()
    );

    let outputs = parse_guest_output(&run.run, plan.len());
    let tests = plan
        .iter()
        .zip(outputs)
        .zip(windows.into_iter().zip(exchanges))
        .enumerate()
        .map(|(k, ((&kind, output), (window, host)))| {
            let tagged = |tag: &str| {
                let prefix = format!("{tag} {k}: ");
                run.run
                    .iter()
                    .filter_map(move |l| l.strip_prefix(&prefix).map(str::to_owned))
            };
            let conn = match kind {
                TestKind::ConnRate => {
                    let lines: Vec<String> = tagged("connrate").collect();
                    lines
                        .iter()
                        .find_map(|l| connrate::parse_rate(l))
                        .ok_or_else(|| format!("guest: {}", lines.join("; ")))
                }
                _ => Err("not a connection-rate test".into()),
            };
            Test {
                kind,
                output,
                window,
                latency: Latency {
                    host,
                    guest: tagged("rr").next().map(|rest| format!("guest: {rest}")),
                },
                guest_cpu: tagged("gcpu").find_map(|l| guest_cpu(&l)),
                guest_drops: tagged("gdrops")
                    .next()
                    .map_or_else(Vec::new, |l| guest_drops(&l)),
                conn,
            }
        })
        .collect();
    let log = match (&setup.backend, &setup.daemon) {
        (Some(b), _) => Some(b.log()),
        (None, Some(d)) if kind == Kind::Stream => Some(d.log()),
        _ => None,
    };
    Ok(Measured {
        kind,
        tests,
        mtu: run.get("guest.mtu").map(str::to_owned),
        summary: log
            .and_then(|log| wait_summary(&log, setup.backend.as_ref(), setup.daemon.as_ref())),
        load,
        error: None,
        repeated: Vec::new(),
        queues: run
            .run
            .iter()
            .filter_map(|l| {
                let (queue, packets) = l.strip_prefix("queue: ")?.split_once(' ')?;
                Some((
                    queue.trim_end_matches(':').to_owned(),
                    packets.trim().parse().ok()?,
                ))
            })
            .collect(),
        cpus: run
            .run
            .iter()
            .find_map(|l| l.strip_prefix("cpus: ").map(str::to_owned)),
    })
}

/// The guest's CPU over one test.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GuestCpu {
    /// Busy seconds, all vCPUs together.
    busy: f64,
    /// Busy share of all its vCPUs' time, in percent.
    percent: f64,
}

/// The guest's CPU from its `gcpu K: BUSY0 TOTAL0 BUSY1 TOTAL1` line (ticks of /proc/stat's
/// `cpu` line, USER_HZ 100, before and after one test).
fn guest_cpu(line: &str) -> Option<GuestCpu> {
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    let [busy0, total0, busy1, total1] = v[..] else {
        return None;
    };
    let busy = busy1.checked_sub(busy0)?;
    let total = total1.checked_sub(total0)?;
    (total > 0).then(|| GuestCpu {
        busy: busy as f64 / 100.0,
        percent: 100.0 * busy as f64 / total as f64,
    })
}

/// The backend's last `connection summary` line (logged when QEMU disconnects; QEMU has exited,
/// but the backend may take a moment to notice).
fn wait_summary(first: &str, backend: Option<&Backend>, daemon: Option<&Daemon>) -> Option<String> {
    const MARK: &str = "connection summary: ";
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut log = first.to_owned();
    loop {
        if let Some(line) = log.lines().rev().find_map(|l| l.split_once(MARK)) {
            return Some(line.1.to_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
        log = match (backend, daemon) {
            (Some(b), _) => b.log(),
            (None, Some(d)) => d.log(),
            _ => return None,
        };
    }
}

/// The guest's shell function `m K P`: P percent of the Mbit/s that test K's receiver line
/// reports (`none` without one), as the `fit` tests offer it.
const RECEIVED_SHARE: &str = "m() { r=$(awk -v p=$2 '/receiver/ { for (i = 1; i < NF; i++) \
     if ($(i + 1) == \"Mbits/sec\") print $i * p / 100 }' /tmp/i.$1); echo \"${r:-none}\"; }";

/// The guest's script: iperf3 tests report `iperf K: LINE` (as in guest-throughput; with
/// -P 16 only the `[SUM]` lines) and `gcpu K: BUSY TOTAL BUSY TOTAL`, the guest's CPU ticks
/// (busy: all but idle and iowait) before and after; a latency test runs `nc GATEWAY PORT -e
/// cat` (cat echoes on the socket until the host closes it) and reports `rr K: rc=STATUS`;
/// iperf3 tests also report `gdrops K: NAME=DELTA ...`, the [`GUEST_DROP_COUNTERS`] that moved; a
/// connection-rate test runs the tool from fw_cfg and reports `connrate K: ITS LINE`. Last,
/// the vCPUs and the per-queue packet counters of `ethtool -S eth0`.
fn guest_script(plan: &[TestKind], servers: &[Server], args: &Args) -> String {
    let seconds = args.time;
    let mut script = format!(
        "echo {}\n\
         g() {{ awk '/^cpu / {{ print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }}' /proc/stat; }}\n\
         mkdir -p /tmp\n\
         n() {{ awk '{GUEST_COUNTER_LINES}' /proc/net/netstat /proc/net/snmp; }}\n\
         t() {{ k=$1; s=$2; shift 2; a=$(g); n > /tmp/n.$k; timeout {limit} iperf3 -c {GATEWAY} -f m -t {seconds} \"$@\" > /tmp/i.$k 2>&1; \
         b=$(g); n | awk 'NR == FNR {{ a[$1] = $2; next }} $1 ~ /{GUEST_DROP_COUNTERS}/ && $2 - a[$1] > 0 {{ printf \"%s=%d \", $1, $2 - a[$1] }} END {{ print \"\" }}' /tmp/n.$k - | sed \"s/^/gdrops $k: /\"; awk -v k=\"$k\" -v s=\"$s\" '(/sender|receiver/ && (s == 0 || /SUM/)) || /error/ {{ print \"iperf \" k \": \" $0 }}' /tmp/i.$k; \
         echo \"gcpu $k: $a $b\"; }}\n\
         {RECEIVED_SHARE}\n\
         r() {{ timeout 120 nc {GATEWAY} $2 -e cat; echo \"rr $1: rc=$?\"; }}\n\
         c() {{ o=$(timeout {limit} /tmp/vnu-connrate {GATEWAY}:$2 {seconds} 2>&1); e=$?; \
         echo \"$o\" | sed \"s/^/connrate $1: /\"; [ $e = 0 ] || echo \"connrate $1: rc=$e\"; }}\n",
        SCRIPT_STARTED
            .strip_prefix("run: ")
            .unwrap_or(SCRIPT_STARTED),
        limit = seconds + 20,
    );
    if plan.contains(&TestKind::ConnRate) {
        let _ = writeln!(
            script,
            "cat /sys/firmware/qemu_fw_cfg/by_name/{}/raw > /tmp/vnu-connrate; \
             chmod +x /tmp/vnu-connrate",
            connrate::FW_CFG_NAME
        );
    }
    for (k, (test, server)) in plan.iter().zip(servers).enumerate() {
        let port = match server {
            Server::Iperf(s) => s.port(),
            Server::Echo(s) | Server::Conn(s) => s.port(),
        };
        // The fit tests offer a share of what the unlimited test of their direction received.
        let fit = match test {
            TestKind::Iperf(Load::UdpFit(percent), d) => plan
                .iter()
                .position(|t| *t == TestKind::Iperf(Load::Udp, *d))
                .map_or(" -b none".to_owned(), |prev| {
                    format!(" -b $(m {prev} {percent})M")
                }),
            _ => String::new(),
        };
        let _ = match test {
            TestKind::Iperf(load, d) => writeln!(
                script,
                "t {k} {} -p {port}{}{}{fit}",
                u8::from(*load == Load::Streams),
                d.client_flag(),
                load.flags(args)
            ),
            TestKind::Latency => writeln!(script, "r {k} {port}"),
            TestKind::ConnRate => writeln!(script, "c {k} {port}"),
        };
    }
    script.push_str(
        "echo \"cpus: $(grep -c ^processor /proc/cpuinfo)\"\n\
         ethtool -S eth0 2>&1 | awk '/[rt]x_queue_[0-9]+_packets:/ { print \"queue: \" $1 \" \" $2 }'\n",
    );
    script
}

fn test_label(kind: TestKind) -> String {
    match kind {
        TestKind::Iperf(load, d) => load.label(d),
        TestKind::Latency => "request/response".into(),
        TestKind::ConnRate => "connection rate".into(),
    }
}

/// Per backend, load and direction: median Mbit/s, every run, and CPU figures.
#[derive(Debug, Default)]
struct DirectionFigures {
    /// Whether any test of this load and direction ran.
    ran: bool,
    mbit: Option<f64>,
    runs: Vec<String>,
    backend_cpu: Option<f64>,
    backend_per_gb: Option<f64>,
    /// The kernel's part of `backend_per_gb`: what the backend's system calls cost.
    backend_kernel_per_gb: Option<f64>,
    qemu_cpu: Option<f64>,
    qemu_per_gb: Option<f64>,
    guest_per_gb: Option<f64>,
    retransmits: u64,
    /// UDP: median over the runs of the receiver's lost datagrams, in percent of those sent.
    loss: Option<f64>,
    /// Median over the runs of QEMU's busiest thread's CPU share of the window, in percent:
    /// the vCPU's (see `Window::vcpu_cpu`).
    vcpu_busy: Option<f64>,
    /// Median over the runs of the guest's busy share of its vCPUs' time, in percent.
    guest_busy: Option<f64>,
    /// Per rank (busiest first), the median over the runs of the CPU seconds of the backend's
    /// busiest threads.
    backend_threads: Option<[f64; TOP_THREADS]>,
    /// Median over the runs of the machine's CPU time stolen by the hypervisor, in percent.
    steal: Option<f64>,
    /// Sums over the runs with both a result and a CPU figure: (CPU s, bytes received), for
    /// the backend, for QEMU and for the guest (its own busy time, from its /proc/stat).
    backend_total: (f64, u64),
    backend_kernel_total: (f64, u64),
    qemu_total: (f64, u64),
    guest_total: (f64, u64),
}

fn direction_figures(m: &Measured, load: Load, direction: Direction) -> DirectionFigures {
    let tests: Vec<&Test> = m
        .tests
        .iter()
        .filter(|t| t.kind == TestKind::Iperf(load, direction))
        .collect();
    let rates: Vec<f64> = tests
        .iter()
        .filter_map(|t| Some(t.output.receiver?.mbit_per_s))
        .collect();
    let runs = tests
        .iter()
        .map(|t| match t.output.receiver {
            Some(s) => format!("{:.0}", s.mbit_per_s),
            None => "fail".into(),
        })
        .collect();
    let losses: Vec<f64> = tests
        .iter()
        .filter_map(|t| t.output.receiver?.loss_percent())
        .collect();
    let mut f = DirectionFigures {
        ran: !tests.is_empty(),
        mbit: median(&rates),
        runs,
        loss: median(&losses),
        ..Default::default()
    };
    let mut backend = Vec::new();
    let mut qemu = Vec::new();
    let mut vcpu = Vec::new();
    let mut guest = Vec::new();
    let mut steal = Vec::new();
    for t in &tests {
        let Some(r) = t.output.receiver else {
            continue;
        };
        if let Some(c) = t.guest_cpu {
            guest.push(c.percent);
            f.guest_total.0 += c.busy;
            f.guest_total.1 += r.bytes;
        }
        let Some(w) = t.window else {
            continue;
        };
        if let Some(c) = w.vcpu_cpu.filter(|_| !w.wall.is_zero()) {
            vcpu.push(100.0 * c / w.wall.as_secs_f64());
        }
        steal.extend(w.steal_percent);
        if let Some(c) = w.backend_cpu {
            backend.push(c);
            f.backend_total.0 += c;
            f.backend_total.1 += r.bytes;
        }
        if let Some(c) = w.backend_kernel_cpu {
            f.backend_kernel_total.0 += c;
            f.backend_kernel_total.1 += r.bytes;
        }
        if let Some(c) = w.qemu_cpu {
            qemu.push(c);
            f.qemu_total.0 += c;
            f.qemu_total.1 += r.bytes;
        }
    }
    f.backend_cpu = median(&backend);
    f.qemu_cpu = median(&qemu);
    f.vcpu_busy = median(&vcpu);
    f.guest_busy = median(&guest);
    let threads: Vec<[f64; TOP_THREADS]> = tests
        .iter()
        .filter(|t| t.output.receiver.is_some())
        .filter_map(|t| t.window?.backend_threads)
        .collect();
    if !threads.is_empty() {
        let mut ranks = [0.0; TOP_THREADS];
        for (rank, slot) in ranks.iter_mut().enumerate() {
            let values: Vec<f64> = threads.iter().map(|t| t[rank]).collect();
            *slot = median(&values).unwrap_or(0.0);
        }
        f.backend_threads = Some(ranks);
    }
    f.steal = median(&steal);
    f.backend_per_gb = per_gb(f.backend_total);
    f.backend_kernel_per_gb = per_gb(f.backend_kernel_total);
    f.qemu_per_gb = per_gb(f.qemu_total);
    f.guest_per_gb = per_gb(f.guest_total);
    f.retransmits = tests
        .iter()
        .filter_map(|t| t.output.sender?.retransmits)
        .sum();
    f
}

/// Latency: median over the runs of each run's mean ms per exchange, and every run's mean.
fn latency_figures(m: &Measured) -> (Option<f64>, Vec<String>, Option<f64>) {
    let runs: Vec<Option<&Exchanges>> = m
        .tests
        .iter()
        .filter(|t| t.kind == TestKind::Latency)
        .map(|t| t.latency.host.as_ref())
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let means: Vec<f64> = runs.iter().flatten().map(|e| ms(e.mean)).collect();
    let medians: Vec<f64> = runs.iter().flatten().map(|e| ms(e.median)).collect();
    let text = runs
        .iter()
        .map(|e| e.map_or("fail".into(), |e| format!("{:.3}", ms(e.mean))))
        .collect();
    (median(&means), text, median(&medians))
}

/// Connection rate figures of one backend.
#[derive(Debug, Default)]
struct ConnFigures {
    /// Median over the runs of completed connections per second.
    rate: Option<f64>,
    /// Every run's figure.
    runs: Vec<String>,
    /// CPU milliseconds per connection over the runs with a CPU window: the backend's, QEMU's.
    backend_ms: Option<f64>,
    qemu_ms: Option<f64>,
}

fn connrate_figures(m: &Measured) -> ConnFigures {
    let tests: Vec<&Test> = m
        .tests
        .iter()
        .filter(|t| t.kind == TestKind::ConnRate)
        .collect();
    let runs: Vec<Option<f64>> = tests
        .iter()
        .map(|t| t.conn.as_ref().ok().and_then(Rate::per_second))
        .collect();
    let rates: Vec<f64> = runs.iter().flatten().copied().collect();
    let (mut backend, mut qemu) = ((0.0, 0), (0.0, 0));
    for t in &tests {
        let (Ok(r), Some(w)) = (&t.conn, t.window) else {
            continue;
        };
        if let Some(c) = w.backend_cpu {
            backend.0 += c;
            backend.1 += r.connections;
        }
        if let Some(c) = w.qemu_cpu {
            qemu.0 += c;
            qemu.1 += r.connections;
        }
    }
    let per_connection =
        |(seconds, count): (f64, u64)| (count > 0).then(|| 1e3 * seconds / count as f64);
    ConnFigures {
        rate: median(&rates),
        runs: runs
            .iter()
            .map(|r| r.map_or("fail".into(), |r| format!("{r:.0}")))
            .collect(),
        backend_ms: per_connection(backend),
        qemu_ms: per_connection(qemu),
    }
}

/// CPU seconds per 10^9 bytes.
fn per_gb((seconds, bytes): (f64, u64)) -> Option<f64> {
    (bytes > 0).then(|| seconds / (bytes as f64 / 1e9))
}

/// CPU s per GB over both directions of the single-stream TCP test: (backend, QEMU, guest).
fn overall_per_gb(m: &Measured) -> (Option<f64>, Option<f64>, Option<f64>) {
    let g = direction_figures(m, Load::Tcp, Direction::GuestToHost);
    let h = direction_figures(m, Load::Tcp, Direction::HostToGuest);
    let sum = |a: (f64, u64), b: (f64, u64)| (a.0 + b.0, a.1 + b.1);
    (
        per_gb(sum(g.backend_total, h.backend_total)),
        per_gb(sum(g.qemu_total, h.qemu_total)),
        per_gb(sum(g.guest_total, h.guest_total)),
    )
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn print_summary(results: &[Measured], plan: &[TestKind]) {
    let basic = plan
        .iter()
        .any(|t| matches!(t, TestKind::Latency | TestKind::Iperf(Load::Tcp, _)));
    if basic {
        print_basic_summary(results);
    }
    let more = plan.iter().any(|t| {
        matches!(
            t,
            TestKind::ConnRate | TestKind::Iperf(Load::Udp | Load::UdpFit(_) | Load::Streams, _)
        )
    });
    if more {
        if basic {
            println!();
        }
        print_more_summary(results);
    }
}

/// The first summary table: single-stream TCP, latency and CPU per GB.
fn print_basic_summary(results: &[Measured]) {
    println!(
        "{:<12} {:>6} {:>12} {:>12} {:>10} {:>10} {:>10} {:>11} {:>11}",
        "backend",
        "MTU",
        "g→h Mbit/s",
        "h→g Mbit/s",
        "rr ms",
        "rr med ms",
        "CPU s/GB",
        "QEMU s/GB",
        "guest s/GB"
    );
    for m in results {
        let g = direction_figures(m, Load::Tcp, Direction::GuestToHost);
        let h = direction_figures(m, Load::Tcp, Direction::HostToGuest);
        let (rr, _, rr_median) = latency_figures(m);
        let (cpu, qemu, guest) = overall_per_gb(m);
        let cpu = if m.kind == Kind::Slirp {
            "in QEMU".to_owned()
        } else {
            fmt(cpu, 2)
        };
        println!(
            "{:<12} {:>6} {:>12} {:>12} {:>10} {:>10} {:>10} {:>11} {:>11}",
            m.kind.name(),
            m.mtu.as_deref().unwrap_or("-"),
            fmt(g.mbit, 0),
            fmt(h.mbit, 0),
            fmt(rr, 3),
            fmt(rr_median, 3),
            cpu,
            fmt(qemu, 2),
            fmt(guest, 2)
        );
    }
}

/// Loss (median over the runs, in percent) up to which a `fit` test's rate counts as sustained.
const SUSTAINED_LOSS: f64 = 1.0;

/// The highest rate `m`'s backend sustained in `direction`: of the UDP tests (unlimited and
/// `fit`) whose median loss is at most [`SUSTAINED_LOSS`], the one that received most; the
/// first `fit` test's when none did. Guest→host the unlimited test usually is it: a TCG guest
/// sends less with iperf3 pacing its datagrams than without.
fn sustained(m: &Measured, direction: Direction) -> DirectionFigures {
    // The first `fit` test first: the fallback.
    let mut tests: Vec<DirectionFigures> = Load::FIT_STEPS
        .iter()
        .map(|&percent| Load::UdpFit(percent))
        .chain([Load::Udp])
        .map(|load| direction_figures(m, load, direction))
        .collect();
    let best = tests
        .iter()
        .enumerate()
        .filter(|(_, f)| f.loss.is_some_and(|loss| loss <= SUSTAINED_LOSS) && f.mbit.is_some())
        .max_by(|(_, a), (_, b)| a.mbit.unwrap_or(0.0).total_cmp(&b.mbit.unwrap_or(0.0)))
        .map_or(0, |(i, _)| i);
    std::mem::take(&mut tests[best])
}

/// The second summary table: connection rate, 16 streams and UDP; `kept` is the highest UDP
/// rate sustained ([`sustained`]).
fn print_more_summary(results: &[Measured]) {
    println!(
        "{:<12} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6}",
        "backend",
        "conn/s",
        "ms/conn",
        "16x g→h",
        "16x h→g",
        "UDP g→h",
        "loss%",
        "UDP h→g",
        "loss%",
        "kept g→h",
        "loss%",
        "kept h→g",
        "loss%"
    );
    for m in results {
        let figures = |load, direction| direction_figures(m, load, direction);
        let sg = figures(Load::Streams, Direction::GuestToHost);
        let sh = figures(Load::Streams, Direction::HostToGuest);
        let ug = figures(Load::Udp, Direction::GuestToHost);
        let uh = figures(Load::Udp, Direction::HostToGuest);
        let fg = sustained(m, Direction::GuestToHost);
        let fh = sustained(m, Direction::HostToGuest);
        let conn = connrate_figures(m);
        println!(
            "{:<12} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6}",
            m.kind.name(),
            fmt(conn.rate, 0),
            if m.kind == Kind::Slirp {
                "in QEMU".into()
            } else {
                fmt(conn.backend_ms, 3)
            },
            fmt(sg.mbit, 0),
            fmt(sh.mbit, 0),
            fmt(ug.mbit, 0),
            fmt(ug.loss, 1),
            fmt(uh.mbit, 0),
            fmt(uh.loss, 1),
            fmt(fg.mbit, 0),
            fmt(fg.loss, 1),
            fmt(fh.mbit, 0),
            fmt(fh.loss, 1)
        );
    }
}

fn print_details(results: &[Measured]) {
    println!(
        "{:<12} {:<25} {:>8}  {:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>9}  load at \
         start",
        "backend",
        "test",
        "median",
        "runs",
        "backend s",
        "s/GB",
        "kernel",
        "QEMU s",
        "guest s/GB",
        "vCPU %",
        "guest %",
        "steal %",
        "retr/loss"
    );
    for m in results {
        for load in Load::ALL {
            for direction in Direction::BOTH {
                let f = direction_figures(m, load, direction);
                if !f.ran {
                    continue;
                }
                // slirp runs inside QEMU: no backend process to measure.
                let of_backend = |v: Option<f64>, none: &str| {
                    if m.kind == Kind::Slirp {
                        none.to_owned()
                    } else {
                        fmt(v, 2)
                    }
                };
                let retr_loss = match load {
                    Load::Udp | Load::UdpFit(_) => fmt(f.loss, 1) + "%",
                    Load::Tcp | Load::Streams => f.retransmits.to_string(),
                };
                println!(
                    "{:<12} {:<25} {:>8}  {:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} \
                     {:>9}  {}",
                    m.kind.name(),
                    format!("{} Mbit/s", load.label(direction)),
                    fmt(f.mbit, 0),
                    f.runs.join(" "),
                    of_backend(f.backend_cpu, "in QEMU"),
                    of_backend(f.backend_per_gb, "-"),
                    of_backend(f.backend_kernel_per_gb, "-"),
                    fmt(f.qemu_cpu, 2),
                    fmt(f.guest_per_gb, 2),
                    fmt(f.vcpu_busy, 0),
                    fmt(f.guest_busy, 0),
                    fmt(f.steal, 0),
                    retr_loss,
                    m.load
                );
            }
        }
        if m.tests.iter().any(|t| t.kind == TestKind::Latency) {
            let (rr, runs, _) = latency_figures(m);
            println!(
                "{:<12} {:<25} {:>8}  {:<24}",
                m.kind.name(),
                "rr ms/exchange",
                fmt(rr, 3),
                runs.join(" ")
            );
        }
        if m.tests.iter().any(|t| t.kind == TestKind::ConnRate) {
            let c = connrate_figures(m);
            println!(
                "{:<12} {:<25} {:>8}  {:<24}  CPU ms per connection: backend {}, QEMU {}",
                m.kind.name(),
                "connections/s",
                fmt(c.rate, 0),
                c.runs.join(" "),
                if m.kind == Kind::Slirp {
                    "in QEMU".into()
                } else {
                    fmt(c.backend_ms, 3)
                },
                fmt(c.qemu_ms, 3)
            );
        }
    }
}

/// One line per backend that has anything to say: `title`, then `part` for each iperf3 test
/// (load and direction) it has one for, joined by `separator`.
fn print_per_test(
    results: &[Measured],
    title: &str,
    separator: &str,
    part: impl Fn(&Measured, Load, Direction) -> Option<String>,
) {
    for m in results {
        let mut parts = Vec::new();
        for load in Load::ALL {
            for direction in Direction::BOTH {
                if let Some(text) = part(m, load, direction) {
                    parts.push(format!("{} {text}", load.label(direction)));
                }
            }
        }
        if !parts.is_empty() {
            println!("{} {title}: {}", m.kind.name(), parts.join(separator));
        }
    }
}

/// Per backend and iperf3 test, the CPU seconds of the backend's busiest threads: with
/// several queue pairs, whether each pair's worker carried its share.
fn print_threads(results: &[Measured]) {
    let title = "busiest threads, CPU s per test (median over the runs)";
    print_per_test(results, title, ", ", |m, load, direction| {
        let threads = direction_figures(m, load, direction).backend_threads?;
        let text: Vec<String> = threads.iter().map(|c| format!("{c:.2}")).collect();
        Some(text.join("/"))
    });
}

/// Per backend and iperf3 test, the guest's TCP and UDP drops and TCP retransmissions, summed
/// over the runs: a test whose guest ran out of receive memory, or whose UDP socket
/// overflowed, shows it here.
fn print_guest_drops(results: &[Measured]) {
    let title = "guest drops and retransmissions, TCP and UDP (summed over the runs)";
    print_per_test(results, title, "; ", |m, load, direction| {
        let mut sums: Vec<(String, u64)> = Vec::new();
        let runs = m
            .tests
            .iter()
            .filter(|t| t.kind == TestKind::Iperf(load, direction));
        for (name, value) in runs.flat_map(|t| &t.guest_drops) {
            match sums.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += value,
                None => sums.push((name.clone(), *value)),
            }
        }
        let text: Vec<String> = sums.iter().map(|(n, v)| format!("{n}={v}")).collect();
        (!text.is_empty()).then(|| text.join(" "))
    });
}

/// Per backend, the guest's packets per queue (`ethtool -S eth0`, summed over its boots), with
/// each queue's share of its direction.
fn print_queues(results: &[Measured]) {
    for m in results {
        if m.queues.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        for direction in ["rx", "tx"] {
            let queues: Vec<&(String, u64)> = m
                .queues
                .iter()
                .filter(|(q, _)| q.starts_with(direction))
                .collect();
            let total: u64 = queues.iter().map(|(_, p)| p).sum();
            let several = queues.len() > 1;
            for (queue, packets) in queues {
                let share = if total > 0 {
                    100.0 * *packets as f64 / total as f64
                } else {
                    0.0
                };
                // The issue's bar for multiqueue: every queue at least 10% of its direction.
                let low = if several && share < 10.0 {
                    ", below 10%"
                } else {
                    ""
                };
                parts.push(format!(
                    "{} {packets} ({share:.1}%{low})",
                    queue.trim_end_matches("_packets")
                ));
            }
        }
        println!(
            "{} queues (guest ethtool -S, packets over its boots; {} vCPUs): {}",
            m.kind.name(),
            m.cpus.as_deref().unwrap_or("?"),
            parts.join(", ")
        );
    }
}

fn write_svg(path: &Path, results: &[Measured], args: &Args, end_load: &str) -> Result<(), String> {
    let bars = |f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        results
            .iter()
            .map(|m| (m.kind.name().to_owned(), f(m)))
            .collect()
    };
    let mbit = |load, direction| bars(&|m: &Measured| direction_figures(m, load, direction).mbit);
    let higher = "Mbit/s, median; higher is better";
    let udp_note = format!(
        "Mbit/s received (iperf3 -u -b {} -l {}), median; higher is better",
        args.udp_rate, args.udp_len
    );
    let panels = vec![
        Panel {
            title: "guest → host TCP (iperf3)".into(),
            note: higher.into(),
            bars: mbit(Load::Tcp, Direction::GuestToHost),
            decimals: 0,
        },
        Panel {
            title: "host → guest TCP (iperf3 -R)".into(),
            note: higher.into(),
            bars: mbit(Load::Tcp, Direction::HostToGuest),
            decimals: 0,
        },
        Panel {
            title: "request/response latency".into(),
            note: format!(
                "ms per exchange (mean of {}, median of runs); lower is better",
                args.exchanges
            ),
            bars: bars(&|m| latency_figures(m).0),
            decimals: 3,
        },
        Panel {
            title: "backend CPU per GB moved".into(),
            note: "CPU s per 10^9 bytes, both ways; slirp runs inside QEMU (n/a)".into(),
            bars: bars(&|m| overall_per_gb(m).0),
            decimals: 2,
        },
        Panel {
            title: "guest CPU per GB moved".into(),
            note: "the guest's busy CPU s per 10^9 bytes, TCP both ways; lower is better".into(),
            bars: bars(&|m| overall_per_gb(m).2),
            decimals: 2,
        },
        Panel {
            title: "TCP connection rate".into(),
            note: "connect, 32 bytes each way, close; per second, median; higher is better".into(),
            bars: bars(&|m| connrate_figures(m).rate),
            decimals: 0,
        },
        Panel {
            title: "guest → host, 16 TCP streams (iperf3 -P 16)".into(),
            note: higher.into(),
            bars: mbit(Load::Streams, Direction::GuestToHost),
            decimals: 0,
        },
        Panel {
            title: "host → guest, 16 TCP streams (iperf3 -P 16 -R)".into(),
            note: higher.into(),
            bars: mbit(Load::Streams, Direction::HostToGuest),
            decimals: 0,
        },
        Panel {
            title: "guest → host UDP".into(),
            note: udp_note.clone(),
            bars: mbit(Load::Udp, Direction::GuestToHost),
            decimals: 0,
        },
        Panel {
            title: "host → guest UDP (-R)".into(),
            note: udp_note,
            bars: mbit(Load::Udp, Direction::HostToGuest),
            decimals: 0,
        },
        Panel {
            title: "guest → host UDP, offered what the above received".into(),
            note: "Mbit/s received, median; higher is better (loss in the table)".into(),
            bars: mbit(Load::UdpFit(100), Direction::GuestToHost),
            decimals: 0,
        },
        Panel {
            title: "host → guest UDP, offered what the above received".into(),
            note: "Mbit/s received, median; higher is better (loss in the table)".into(),
            bars: mbit(Load::UdpFit(100), Direction::HostToGuest),
            decimals: 0,
        },
    ];
    // Only the panels of tests that ran (--tests).
    let panels: Vec<Panel> = panels
        .into_iter()
        .filter(|p| p.bars.iter().any(|(_, v)| v.is_some()))
        .collect();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let subtitle = vec![
        format!(
            "Test guest (Debian kernel, busybox, QEMU TCG, {} vCPU) to host loopback via \
             {GATEWAY}; {} runs of iperf3 -t {}",
            args.smp, args.runs, args.time
        ),
        format!(
            "{nproc} CPUs; load average at the end {end_load}; guest MTU: {}",
            results
                .iter()
                .map(|m| format!("{} {}", m.kind.name(), m.mtu.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let svg = svg::bar_chart(
        "vhost-net-user: one guest behind user-mode network backends",
        &subtitle,
        &panels,
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest's awk lists TCP's and UDP's counters (UDP's prefixed), keeps the drop
    /// counters, not their look-alikes, and the report reads its line back.
    #[test]
    fn guest_drop_counters_are_picked_and_read_back() {
        let awk = |program: &str, input: &str| {
            let mut awk = std::process::Command::new("awk")
                .arg(program)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(awk.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
            String::from_utf8(awk.wait_with_output().unwrap().stdout).unwrap()
        };
        let snmp = "Tcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 9 0\n\
                    Udp: InDatagrams InErrors RcvbufErrors\nUdp: 100 4 4\n\
                    UdpLite: InDatagrams InErrors RcvbufErrors\nUdpLite: 0 7 7\n\
                    TcpExt: TCPRcvQDrop TCPMemoryPressuresChrono TCPMemoryPressures PruneCalled\n\
                    TcpExt: 5 700 3 2\n";
        let lines = awk(GUEST_COUNTER_LINES, snmp);
        assert_eq!(
            lines,
            "RtoAlgorithm 1\nRetransSegs 9\nInErrs 0\nUdpInDatagrams 100\nUdpInErrors 4\n\
             UdpRcvbufErrors 4\nTCPRcvQDrop 5\nTCPMemoryPressuresChrono 700\n\
             TCPMemoryPressures 3\nPruneCalled 2\n"
        );
        let program = format!("$1 ~ /{GUEST_DROP_COUNTERS}/ {{ printf \"%s=%d \", $1, $2 }}");
        let line = awk(&program, &lines);
        let expected = [
            ("RetransSegs", 9),
            ("UdpInErrors", 4),
            ("UdpRcvbufErrors", 4),
            ("TCPRcvQDrop", 5),
            ("TCPMemoryPressures", 3),
            ("PruneCalled", 2),
        ];
        let got = guest_drops(&line);
        let got: Vec<(&str, u64)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(got, expected, "{line}");
    }

    /// `m K P` reads test K's receiver rate and offers P percent of it.
    #[test]
    fn the_fit_tests_offer_a_share_of_the_received_rate() {
        let k = format!("vnu-test-{}", std::process::id());
        let file = format!("/tmp/i.{k}");
        std::fs::write(
            &file,
            "[  5]   0.00-4.00   sec   127 MBytes   263 Mbits/sec  0.074 ms  1/9 (0.1%)  sender\n\
             [  5]   0.00-4.00   sec   126 MBytes   262.5 Mbits/sec  0.074 ms  2/9 (0.2%)  receiver\n",
        )
        .unwrap();
        let run = |percent: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{RECEIVED_SHARE}\nm {k} {percent}"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let got = [run("100"), run("150"), run("200")];
        std::fs::remove_file(&file).unwrap();
        assert_eq!(got, ["262.5", "393.75", "525"]);
        assert_eq!(run("100"), "none", "no receiver line: nothing to offer");
    }

    #[test]
    fn rates_iperf3_takes() {
        for good in ["0", "800M", "2G", "1.5g", "100k"] {
            assert!(is_rate(good), "{good}");
        }
        for bad in ["", "5x", "M", "-1M", "inf", "NaN", "1MM"] {
            assert!(!is_rate(bad), "{bad}");
        }
    }

    #[test]
    fn guest_busy_time_is_the_rise_of_the_busy_ticks() {
        assert_eq!(
            guest_cpu("1000 5000 1250 5400"),
            Some(GuestCpu {
                busy: 2.5,
                percent: 62.5
            })
        );
        assert_eq!(guest_cpu("1000 5000 900 5400"), None);
        assert_eq!(guest_cpu("1000 5000 1250 5000"), None);
        assert_eq!(guest_cpu("1000 5000"), None);
        assert_eq!(guest_cpu("a b c d"), None);
    }

    #[test]
    fn the_plan_follows_the_test_sets_in_a_fixed_order() {
        let udp = test_plan(&[TestSet::Udp]);
        assert_eq!(udp.len(), 8);
        assert_eq!(
            udp[2],
            TestKind::Iperf(Load::UdpFit(100), Direction::GuestToHost)
        );
        let plan = test_plan(&[TestSet::Streams16, TestSet::Rr]);
        assert_eq!(
            plan,
            [
                TestKind::Latency,
                TestKind::Iperf(Load::Streams, Direction::GuestToHost),
                TestKind::Iperf(Load::Streams, Direction::HostToGuest),
            ]
        );
    }

    #[test]
    fn a_vhost_user_net_gets_its_queues_and_the_extra_arguments() {
        let net = Net::VhostUser {
            socket: "/tmp/s".into(),
            reconnect: false,
        };
        let Net::Raw {
            args,
            shared_memory,
            vectors,
        } = guest_net(net, Some(2), vec!["-smp".into(), "2".into()])
        else {
            panic!("not raw");
        };
        assert_eq!(
            args,
            [
                "-chardev",
                "socket,id=c0,path=/tmp/s",
                "-netdev",
                "vhost-user,id=n0,chardev=c0,queues=2",
                "-smp",
                "2"
            ]
        );
        assert!(shared_memory);
        assert_eq!(vectors, Some(0));
    }
}
