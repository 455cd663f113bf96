//! guest-throughput: TCP throughput of the test guest behind QEMU slirp and behind
//! `vhost-net-user`, both ways, with the backend's CPU cost.
//!
//! Each backend gets one guest boot (a boot costs ~10 s of TCG; the tests reuse it). The guest
//! runs iperf3 against one-off servers on host loopback through the gateway address, alternating
//! directions run after run so that a change in the machine's load hits both alike. See
//! `perf/README.md` for what the columns mean.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use vnu_perf::{
    Direction, GATEWAY, IperfServer, TestOutput, Watched, Window, binary_description,
    clock_ticks_per_second, load_average, machine_description, median, parse_guest_output,
};
use vnu_tests::{Backend, GuestOpts, Net};

#[derive(Parser, Debug)]
#[command(
    name = "guest-throughput",
    about = "iperf3 from a QEMU guest to host loopback: QEMU slirp against vhost-net-user"
)]
struct Args {
    /// Tests per backend and direction; the table shows their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,

    /// Seconds per iperf3 test (iperf3 -t).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=600))]
    time: u32,

    /// Measure one backend only.
    #[arg(long, value_enum)]
    only: Option<Kind>,

    /// Pass this argument to vhost-net-user (repeat for more), e.g. `--backend-arg=-v`.
    #[arg(long = "backend-arg", value_name = "ARG", allow_hyphen_values = true)]
    backend_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// QEMU's own `-netdev user`.
    Slirp,
    /// target/release/vhost-net-user over vhost-user.
    #[value(name = "vhost-net-user")]
    Ours,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Slirp => "qemu-slirp",
            Kind::Ours => "vhost-net-user",
        }
    }
}

/// One iperf3 test as the guest reported it and as the host timed it.
#[derive(Debug)]
struct Test {
    direction: Direction,
    output: TestOutput,
    window: Option<Window>,
}

/// Everything measured behind one backend.
#[derive(Debug)]
struct Measured {
    kind: Kind,
    tests: Vec<Test>,
    /// The backend's counters, logged when QEMU disconnected.
    summary: Option<String>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("guest-throughput: some tests gave no result (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("guest-throughput: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the whole benchmark; `Ok(false)` when some test gave no number.
fn run(args: &Args) -> Result<bool, String> {
    let kinds: Vec<Kind> = match args.only {
        Some(kind) => vec![kind],
        None => vec![Kind::Slirp, Kind::Ours],
    };
    let qemu = vnu_tests::qemu_bin();
    if vnu_tests::find_program(&qemu).is_none() {
        return Err(format!(
            "{qemu} not found (apt-get install qemu-system-x86)"
        ));
    }
    if vnu_tests::find_program("iperf3").is_none() {
        return Err("iperf3 not found on the host (apt-get install iperf3)".into());
    }
    let bin = if kinds.contains(&Kind::Ours) {
        Some(vnu_perf::release_backend()?)
    } else {
        None
    };
    let ticks = clock_ticks_per_second()?;

    println!("{}", machine_description(&qemu));
    if let Some(bin) = &bin {
        println!("backend   {}", binary_description(bin));
    }
    println!(
        "test      iperf3 -t {} -f m in the guest to {GATEWAY} (host 127.0.0.1), runs per direction: {}",
        args.time, args.runs
    );
    println!();

    let mut results = Vec::new();
    for kind in kinds {
        results.push(measure(kind, args, ticks)?);
    }
    print_table(&results);
    println!("load avg  {} (at the end)", load_average());
    let mut complete = true;
    for m in &results {
        if let Some(summary) = &m.summary {
            println!("{} connection summary: {summary}", m.kind.name());
        }
        for (k, t) in m.tests.iter().enumerate() {
            if t.output.receiver.is_none() {
                complete = false;
                println!(
                    "{} test {k} ({}) gave no result: {}",
                    m.kind.name(),
                    t.direction.label(),
                    t.output.errors.join("; ")
                );
            }
        }
    }
    Ok(complete)
}

/// Boots one guest behind `kind` and runs every test in it.
fn measure(kind: Kind, args: &Args, ticks_per_second: u64) -> Result<Measured, String> {
    let backend = match kind {
        Kind::Slirp => None,
        Kind::Ours => {
            let extra: Vec<&str> = args.backend_args.iter().map(String::as_str).collect();
            Some(Backend::start(&extra).map_err(|e| e.to_string())?)
        }
    };
    let net = backend.as_ref().map_or_else(Net::slirp, Backend::net);
    let directions: Vec<Direction> = (0..args.runs).flat_map(|_| Direction::BOTH).collect();
    let mut servers = directions
        .iter()
        .map(|_| IperfServer::start())
        .collect::<Result<Vec<_>, _>>()?;
    let plan: Vec<(Direction, u16)> = directions
        .iter()
        .zip(&servers)
        .map(|(d, s)| (*d, s.port()))
        .collect();

    // Generous: TCG boots slowly when the machine is busy; a test that hangs is cut by the
    // guest's own `timeout`, so this bound only catches a guest that is stuck for good.
    let per_test = u64::from(args.time) + 30;
    let opts = GuestOpts::new(kind.name(), net)
        .script(&guest_script(&plan, args.time))
        .timeout(Duration::from_secs(180 + per_test * plan.len() as u64));
    eprintln!(
        "guest-throughput: booting the guest behind {} for {} tests of {} s",
        kind.name(),
        plan.len(),
        args.time
    );
    let started = Instant::now();
    let guest = vnu_tests::spawn(&opts).map_err(|e| e.to_string())?;
    let watched = Watched {
        backend: backend.as_ref().map(Backend::pid),
        qemu: guest.pid(),
        ticks_per_second,
    };
    let watchers: Vec<_> = servers.iter_mut().map(|s| s.watch(watched)).collect();
    let run = guest.wait();
    // Kills the servers of tests that never ran, which ends their watchers.
    drop(servers);
    let windows: Vec<Option<Window>> = watchers
        .into_iter()
        .map(|w| w.join().unwrap_or(None))
        .collect();
    let run = run.map_err(|e| e.to_string())?;
    eprintln!(
        "guest-throughput: {} done in {:.0?}",
        kind.name(),
        started.elapsed()
    );

    let outputs = parse_guest_output(&run.run, plan.len());
    let tests = directions
        .into_iter()
        .zip(outputs)
        .zip(windows)
        .map(|((direction, output), window)| Test {
            direction,
            output,
            window,
        })
        .collect();
    Ok(Measured {
        kind,
        tests,
        // QEMU has exited, but the backend may take a moment to notice and log its counters.
        summary: backend
            .as_ref()
            .and_then(|b| b.connection_summary(Duration::from_secs(3))),
    })
}

/// The guest's script: test K runs `iperf3 -c GATEWAY -p PORT_K [-R]` and reports its summary
/// and error lines as `iperf K: LINE`. busybox `timeout` bounds a test that hangs, so the
/// following tests still run.
fn guest_script(plan: &[(Direction, u16)], seconds: u32) -> String {
    let mut script = format!(
        "t() {{ k=$1; shift; timeout {limit} iperf3 -c {GATEWAY} -f m -t {seconds} \"$@\" 2>&1 | \
         awk -v k=\"$k\" '/sender|receiver|error/ {{ print \"iperf \" k \": \" $0 }}'; }}\n",
        limit = seconds + 20
    );
    for (k, (direction, port)) in plan.iter().enumerate() {
        let _ = writeln!(script, "t {k} -p {port}{}", direction.client_flag());
    }
    script
}

/// Prints one row per backend and direction.
///
/// Mbit/s is what the receiver got; CPU is charged per test (server accept to server exit); CPU
/// per GB divides the CPU of all tests by all they moved (10^9 bytes); retr adds up the
/// sender's TCP retransmissions over the runs.
fn print_table(results: &[Measured]) {
    print_row(&[
        "backend",
        "direction",
        "Mbit/s",
        "runs (Mbit/s)",
        "backend CPU s",
        "CPU s per GB",
        "QEMU CPU s",
        "retr",
    ]);
    for m in results {
        for direction in Direction::BOTH {
            let tests: Vec<&Test> = m
                .tests
                .iter()
                .filter(|t| t.direction == direction)
                .collect();
            let runs: Vec<String> = tests
                .iter()
                .map(|t| match t.output.receiver {
                    Some(s) => format!("{:.0}", s.mbit_per_s),
                    None => "fail".to_owned(),
                })
                .collect();
            let rates: Vec<f64> = tests
                .iter()
                .filter_map(|t| Some(t.output.receiver?.mbit_per_s))
                .collect();
            // Only tests with both a result and a CPU window count toward CPU figures.
            let cpu: Vec<(f64, u64)> = tests
                .iter()
                .filter_map(|t| Some((t.window?.backend_cpu?, t.output.receiver?.bytes)))
                .collect();
            let cpu_seconds: Vec<f64> = cpu.iter().map(|c| c.0).collect();
            let bytes: u64 = cpu.iter().map(|c| c.1).sum();
            let per_gb =
                (bytes > 0).then(|| cpu_seconds.iter().sum::<f64>() / (bytes as f64 / 1e9));
            let qemu_cpu: Vec<f64> = tests.iter().filter_map(|t| t.window?.qemu_cpu).collect();
            let retransmits: u64 = tests
                .iter()
                .filter_map(|t| t.output.sender?.retransmits)
                .sum();
            let backend_cpu = match m.kind {
                Kind::Slirp => "in QEMU".to_owned(),
                Kind::Ours => fmt(median(&cpu_seconds), 2),
            };
            print_row(&[
                m.kind.name(),
                direction.label(),
                &fmt(median(&rates), 0),
                &runs.join(" "),
                &backend_cpu,
                &fmt(per_gb, 2),
                &fmt(median(&qemu_cpu), 2),
                &retransmits.to_string(),
            ]);
        }
    }
}

fn print_row(cells: &[&str; 8]) {
    let [backend, direction, rate, runs, cpu, per_gb, qemu, retr] = cells;
    println!(
        "{backend:<15} {direction:<11} {rate:>7}  {runs:<20} {cpu:>13} {per_gb:>12} {qemu:>10} {retr:>6}"
    );
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}
