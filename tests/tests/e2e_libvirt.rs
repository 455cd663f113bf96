//! End-to-end under real libvirt (Debian 13: libvirt 11.3, QEMU 10.0, passt 2025-05), this
//! program being libvirt's passt: the seed's domain gives the guest QEMU slirp's view.
//!
//! Each test runs its own libvirtd in the Debian 13 root (see `vnu_tests::libvirt`) whose passt
//! is this program (`/usr/local/bin/passt`, first in libvirtd's PATH), and for the seed's case a
//! second one whose passt is Debian's. Each test boots the test guest through libvirt three ways: `type='user'` (QEMU slirp,
//! the reference), `type='user'` + `<backend type='passt'/>` (QEMU `-netdev stream`) and
//! `type='vhostuser'` + `<backend type='passt'/>`, and compares what the guest reports
//! (address, netmask, router, DNS, lease, MTU option, gateway MAC, routes, gateway ping: the
//! harness's `IPV4_KEYS`). The seed's case (`<ip 169.254.0.0/16>`) also boots Debian's passt
//! both ways and prints the five side by side (`scripts/libvirt-compare.sh` prints that table);
//! there the passt domains carry a `<portForward>` from 127.0.0.1 (nothing listens beyond this
//! machine) to a guest `nc` serving a token, and stopping them (the guest's own poweroff for
//! one, `virsh destroy` for the other) must leave no passt process, socket or pid file.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use vnu_tests::hostsrv::free_port;
use vnu_tests::libvirt::{Domain, Iface, Libvirt, Passt, until_empty};
use vnu_tests::{GuestRun, IPV4_KEYS, assert_same_keys, diff_keys, skip};

/// The seed's `<ip>`.
const SEED_IP: (&str, u8) = ("169.254.0.0", 16);
/// Where the guest's `nc` listens for the forward.
const GUEST_PORT: u16 = 8080;
/// The console line the guest prints once its `nc` listens (straight to the console: the
/// script's own output reaches it only when the script ends).
const LISTENING: &str = "vnu-fwd: listening";
/// How long a stopped domain's passt may take to go away.
const CLEANUP: Duration = Duration::from_secs(15);

/// A libvirtd whose passt is `passt`, for one test: it and everything it runs are killed when
/// it is dropped, the test failing included (and when the test process dies: see
/// `vnu_tests::libvirt`). `None` when it cannot start and `VNU_E2E_ALLOW_SKIP=1` (otherwise the
/// test fails).
fn libvirt(passt: Passt) -> Option<Libvirt> {
    match Libvirt::start(passt) {
        Ok(l) => Some(l),
        Err(e) => {
            skip(&format!("libvirt in the Debian 13 root: {e}"));
            None
        }
    }
}

/// What the guest's `nc` serves on the forward of domain `name`.
fn token(name: &str) -> String {
    format!("vnu-forward-{name}")
}

/// The guest script of the forward domains: `nc` serves [`token`] once on [`GUEST_PORT`]
/// (for 60 s at most), and says when it listens. Then the guest powers off, or, for a domain
/// the test destroys, lingers (so that `virsh destroy` finds it running).
fn forward_script(name: &str, stop: Stop) -> String {
    let linger = if stop == Stop::Destroy {
        "sleep 600\n"
    } else {
        ""
    };
    format!(
        r#"echo {token} > /tmp/msg
timeout 60 nc -l -p {GUEST_PORT} < /tmp/msg > /dev/null &
n=0
while [ $n -lt 100 ] && ! grep -q ':{GUEST_PORT:04X} 00000000:0000 0A' /proc/net/tcp; do sleep 0.1; n=$((n + 1)); done
echo "{LISTENING}" > /dev/console
wait
{linger}"#,
        token = token(name)
    )
}

/// Connects to 127.0.0.1:`port` and reads what comes (10 s at most): the first line, or what
/// went wrong.
fn fetch_forward(port: u16) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    break;
                }
            }
            Err(e) => {
                if got.is_empty() {
                    return format!("read: {e}");
                }
                break;
            }
        }
    }
    if got.is_empty() {
        return "closed without data".to_owned();
    }
    String::from_utf8_lossy(&got).trim().to_owned()
}

/// What one boot gave: the guest's report, and for passt domains the forward's outcome, the
/// passt command line libvirt ran, and what was left (processes, files) once it stopped.
struct Outcome {
    run: GuestRun,
    forward: Option<String>,
    passt_command: Option<String>,
    running_passt: Vec<String>,
    left_processes: Vec<String>,
    left_files: Vec<String>,
}

/// How a boot ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The guest powers off when its script ends.
    Poweroff,
    /// `virsh destroy` once the forward was tried.
    Destroy,
}

/// Boots `domain` under `libvirt`. With a forward, waits for the guest's listener, records
/// the passt processes and files while it runs, and fetches through the forward; then stops
/// the domain as `stop` says and polls until its passt leaves nothing (or [`CLEANUP`]).
fn boot(libvirt: &Libvirt, domain: &Domain, stop: Stop) -> Outcome {
    let running = libvirt
        .create(domain)
        .unwrap_or_else(|e| panic!("starting domain `{}`: {e}", domain.name));
    let mut forward = None;
    let mut running_passt = Vec::new();
    if let Some((host, _)) = domain.forward {
        if let Err(e) = running.wait_for_line(LISTENING, Duration::from_secs(120)) {
            panic!(
                "{e}\nlibvirtd log:\n{}",
                vnu_tests::tail(&libvirt.log(), 20)
            );
        }
        running_passt = libvirt.passt_processes(&domain.name);
        running_passt.extend(libvirt.passt_files(&domain.name));
        forward = Some(fetch_forward(host));
    }
    let run = match stop {
        Stop::Poweroff => running.wait(),
        Stop::Destroy => running.destroy(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let (left_processes, left_files) = if domain.iface == Iface::Slirp {
        (Vec::new(), Vec::new())
    } else {
        (
            until_empty(CLEANUP, || libvirt.passt_processes(&domain.name)),
            until_empty(CLEANUP, || libvirt.passt_files(&domain.name)),
        )
    };
    Outcome {
        run,
        forward,
        passt_command: libvirt.passt_commands(&domain.name).into_iter().next(),
        running_passt,
        left_processes,
        left_files,
    }
}

/// A domain of the seed's kind named `name` and a tag of this process (the passt processes of
/// a domain are found by name among all of this machine's), with `ip` (if any).
fn domain(name: &str, iface: Iface, ip: Option<(&str, u8)>) -> Domain {
    let d = Domain::new(
        &format!("{name}-{:04x}", std::process::id() & 0xffff),
        iface,
    );
    match ip {
        Some((address, prefix)) => d.ip(address, prefix),
        None => d,
    }
}

/// The same domain with a forward from a free 127.0.0.1 port to the guest's `nc`, to be
/// stopped as `stop` says.
fn with_forward(d: Domain, stop: Stop) -> Domain {
    let script = forward_script(&d.name, stop);
    d.forward(free_port("127.0.0.1"), GUEST_PORT)
        .script(&script)
}

/// Asserts that `ours` (a passt domain under this program) saw what QEMU slirp's guest saw,
/// that its passt was running while the guest ran and left nothing once the domain stopped.
fn assert_as_slirp(slirp: &Outcome, ours: &Outcome, libvirt: &Libvirt) {
    let context = format!(
        "libvirt ran: {}\nlibvirtd log:\n{}",
        ours.passt_command
            .as_deref()
            .unwrap_or("<no passt command in its log>"),
        vnu_tests::tail(&libvirt.log(), 15)
    );
    assert_eq!(
        slirp.run.get("dhcp.status"),
        Some("bound"),
        "{}",
        slirp.run.report()
    );
    assert!(
        ours.passt_command.is_some(),
        "libvirtd's log shows no passt started for `{}`",
        ours.run.name
    );
    assert_same_keys(&slirp.run, &ours.run, IPV4_KEYS, &context);
    assert!(
        ours.left_processes.is_empty(),
        "domain `{}` stopped, yet its passt is still running {CLEANUP:?} later:\n{}",
        ours.run.name,
        ours.left_processes.join("\n")
    );
    assert!(
        ours.left_files.is_empty(),
        "domain `{}` stopped, yet {} still holds {:?} {CLEANUP:?} later",
        ours.run.name,
        vnu_tests::libvirt::PASST_RUN_DIR,
        ours.left_files
    );
}

/// Boots slirp, and this program as passt both ways, with `ip`; asserts the three agree.
fn as_slirp_with(tag: &str, ip: Option<(&str, u8)>) {
    let Some(ours) = libvirt(Passt::Ours) else {
        return;
    };
    let ours = &ours;
    let started = Instant::now();
    let domains = [
        domain(&format!("{tag}-slirp"), Iface::Slirp, ip),
        domain(&format!("{tag}-user-ours"), Iface::UserPasst, ip),
        domain(&format!("{tag}-vhost-ours"), Iface::VhostUserPasst, ip),
    ];
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = domains
            .iter()
            .map(|d| s.spawn(move || boot(ours, d, Stop::Poweroff)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("boot thread"))
            .collect()
    });
    eprintln!(
        "vnu-tests: {tag}: three domains in {:.1?}",
        started.elapsed()
    );
    for ours_run in &outcomes[1..] {
        assert_as_slirp(&outcomes[0], ours_run, ours);
    }
}

/// The rows of the side-by-side table: a label and the guest report's key.
const TABLE_ROWS: &[(&str, &str)] = &[
    ("address", "guest.addr"),
    ("router", "dhcp.router"),
    ("DNS", "dhcp.dns"),
    ("lease (s)", "dhcp.lease"),
    ("MTU option", "dhcp.mtu"),
    ("gateway MAC", "guest.gw_mac"),
    ("routes", "guest.route"),
    ("gateway ping", "guest.gw_ping"),
];

/// The seed's case as a Markdown table, one column per boot.
fn table(columns: &[(&str, &Outcome)]) -> String {
    let mut out = String::from("| |");
    for (name, _) in columns {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    let cell = |s: String| if s.is_empty() { "(none)".to_owned() } else { s };
    for (label, key) in TABLE_ROWS {
        out.push_str(&format!("| {label} |"));
        for (_, o) in columns {
            out.push_str(&format!(" {} |", cell(o.run.all(key).join("; "))));
        }
        out.push('\n');
    }
    out.push_str("| forward 127.0.0.1:P to guest 8080 |");
    for (_, o) in columns {
        let text = match &o.forward {
            None => "(not allowed on slirp)".to_owned(),
            Some(got) if *got == token(&o.run.name) => "works".to_owned(),
            Some(got) => format!("fails: {got}"),
        };
        out.push_str(&format!(" {text} |"));
    }
    out.push_str("\n| left after the domain stopped |");
    for (_, o) in columns {
        let mut left = o.left_files.clone();
        if !o.left_processes.is_empty() {
            left.push(format!("{} process(es)", o.left_processes.len()));
        }
        out.push_str(&format!(" {} |", cell(left.join(", "))));
    }
    out.push('\n');
    out
}

/// The seed's domain (`<ip 169.254.0.0/16>`): under this program as passt, both ways, the
/// guest sees what it sees under QEMU slirp, the `<portForward>` reaches its service, and
/// stopping the domain (poweroff, destroy) leaves nothing. Debian's passt booted the same way
/// shows what users get today: another view. Prints all five side by side.
#[test]
fn seed_domain_as_slirp() {
    let (Some(ours), Some(debian)) = std::thread::scope(|s| {
        let debian = s.spawn(|| libvirt(Passt::Debian));
        (libvirt(Passt::Ours), debian.join().expect("libvirt thread"))
    }) else {
        return;
    };
    let (ours, debian) = (&ours, &debian);
    let started = Instant::now();
    let ip = Some(SEED_IP);
    // A passt domain of the seed's kind with a forward, and how it is stopped.
    let passt = |l, name: &str, iface, stop| (l, with_forward(domain(name, iface, ip), stop), stop);
    let plan: Vec<(&Libvirt, Domain, Stop)> = vec![
        (ours, domain("seed-slirp", Iface::Slirp, ip), Stop::Poweroff),
        passt(debian, "seed-user-deb", Iface::UserPasst, Stop::Destroy),
        passt(
            debian,
            "seed-vhost-deb",
            Iface::VhostUserPasst,
            Stop::Destroy,
        ),
        passt(ours, "seed-user-ours", Iface::UserPasst, Stop::Poweroff),
        passt(
            ours,
            "seed-vhost-ours",
            Iface::VhostUserPasst,
            Stop::Destroy,
        ),
    ];
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .iter()
            .map(|(l, d, stop)| s.spawn(move || boot(l, d, *stop)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("boot thread"))
            .collect()
    });
    let took = started.elapsed();
    let [slirp, deb_user, deb_vhost, ours_user, ours_vhost] = &outcomes[..] else {
        unreachable!("five boots planned");
    };
    let columns = [
        ("QEMU slirp (`type='user'`)", slirp),
        ("Debian 13 passt, `type='user'`", deb_user),
        ("Debian 13 passt, `type='vhostuser'`", deb_vhost),
        ("vhost-net-user as passt, `type='user'`", ours_user),
        ("vhost-net-user as passt, `type='vhostuser'`", ours_vhost),
    ];
    println!(
        "\nThe seed's domain (<ip family='ipv4' address='169.254.0.0' prefix='16'/>, MAC \
         52:54:00:41:2c:49) under libvirt 11.3 and QEMU 10.0 (Debian 13); five boots in \
         {took:.0?}:\n\n{}",
        table(&columns)
    );
    for (name, o) in &columns[1..] {
        println!(
            "{name}: {}",
            o.passt_command
                .as_deref()
                .unwrap_or("(no passt command logged)")
        );
    }

    for ours_run in [ours_user, ours_vhost] {
        assert_as_slirp(slirp, ours_run, ours);
        assert_eq!(
            ours_run.forward.as_deref(),
            Some(token(&ours_run.run.name).as_str()),
            "the <portForward> of `{}` to the guest's nc",
            ours_run.run.name
        );
        assert!(
            !ours_run.running_passt.is_empty(),
            "while `{}` ran, no passt process or file of it was seen (so the cleanup check \
             proves nothing)",
            ours_run.run.name
        );
    }
    // What users get today is another network: what the README's table shows.
    for deb in [deb_user, deb_vhost] {
        let diff = diff_keys(&slirp.run, &deb.run, IPV4_KEYS);
        assert!(
            !diff.is_empty(),
            "Debian's passt gave `{}` slirp's view: the table's premise changed\n{}",
            deb.run.name,
            deb.run.report()
        );
        assert_ne!(deb.run.get("dhcp.status"), None, "{}", deb.run.report());
    }
}

/// `<ip family='ipv4' address='169.254.2.15' prefix='16'/>`: as under slirp, both ways.
#[test]
fn ip_169_254_2_15_as_slirp() {
    as_slirp_with("ip2", Some(("169.254.2.15", 16)));
}

/// No `<ip>`: as under slirp (10.0.2.15/24), both ways.
#[test]
fn no_ip_as_slirp() {
    as_slirp_with("noip", None);
}

/// libvirt's multiqueue, `<driver queues='2'/>` on a `type='vhostuser'` passt interface with two
/// vCPUs: under this program as passt the guest gets both queue pairs and traffic from each
/// vCPU goes out, and comes back, on its own pair.
#[test]
fn vhostuser_with_two_queues_uses_both_pairs() {
    let Some(ours) = libvirt(Passt::Ours) else {
        return;
    };
    // Echo requests to the gateway from each vCPU: XPS sends each on that vCPU's TX queue, and
    // the engine of that queue's pair answers on its RX queue.
    let script = "ethtool -l eth0 | tail -n 5 | grep Combined | tr -s '\\t ' '  '
for cpu in 1 2; do taskset $cpu ping -c 8 -i 0.2 -q 169.254.2.2 >/dev/null && echo ping$cpu=ok; done
ethtool -S eth0 | grep -E '_queue_[0-9]+_packets'
";
    let d = domain("mq-vhost-ours", Iface::VhostUserPasst, Some(SEED_IP))
        .queues(2)
        .script(script);
    let outcome = boot(&ours, &d, Stop::Poweroff);
    let run = &outcome.run;
    let context = format!(
        "libvirt ran: {}\nguest:\n{}\nlibvirtd log:\n{}",
        outcome.passt_command.as_deref().unwrap_or("<none>"),
        run.report(),
        vnu_tests::tail(&ours.log(), 15)
    );
    assert!(run.completed, "{context}");
    assert!(
        run.run.iter().any(|l| l.trim() == "Combined: 2"),
        "two pairs in use: {context}"
    );
    for cpu in ["ping1=ok", "ping2=ok"] {
        assert!(run.run.iter().any(|l| l.trim() == cpu), "{cpu}: {context}");
    }
    let count = |name: &str| -> u64 {
        run.run
            .iter()
            .filter_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    for queue in [
        "rx_queue_0_packets",
        "rx_queue_1_packets",
        "tx_queue_0_packets",
        "tx_queue_1_packets",
    ] {
        assert!(
            count(queue) >= 8,
            "{queue} carried the pings of one vCPU: {context}"
        );
    }
}
