//! Issue 19, defect 7: with the process out of descriptors, a host client waiting on a
//! forwarded port made the level-triggered listener fire again at once, forever (`accept`
//! fails with `EMFILE`): a worker at 100% of a core. The engine now leaves the port unwatched
//! for a while, and takes the connection once descriptors free up.
//!
//! The test runs in a child of the test binary whose soft descriptor limit is low, so that
//! using every descriptor up is cheap and the other tests never see it.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{GATEWAY, GUEST_IP, arp_request};
use netcore::{Engine, MemoryLink};
use netplan::{HostListen, NetPlan, PortForward, PortRange, Proto};
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const CHILD: &str = "VNU_FD_EXHAUSTION_CHILD";
const TEST: &str = "out_of_descriptors_a_forwarded_port_neither_spins_nor_is_lost";
const GUEST_PORT: u16 = 5000;

#[test]
fn out_of_descriptors_a_forwarded_port_neither_spins_nor_is_lost() {
    if std::env::var_os(CHILD).is_some() {
        run_exhausted();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$@\"")
        .arg("sh")
        .arg(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
}

/// The log lines of the child.
static LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        LINES.lock().unwrap().push(record.args().to_string());
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn run_exhausted() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut plan = NetPlan::slirp_default();
    plan.forwards = vec![PortForward {
        proto: Proto::Tcp,
        host: HostListen::Inet {
            addr: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            iface: None,
            ports: PortRange::single(port),
        },
        guest_addr: None,
        guest_port: GUEST_PORT,
        skip_ephemeral: false,
    }];
    let options = common::options_with_forwards_of(&plan);
    let mut engine = Engine::with_options(plan, options).unwrap();
    let mut link = MemoryLink::new();
    engine.handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut link);
    link.take();
    let watch = Epoll::new().unwrap();
    watch
        .ctl(
            ControlOperation::Add,
            engine.host_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )
        .unwrap();

    // A host client waits in the listener's queue; then every descriptor is taken.
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("open: {e}"),
        }
    }

    // For a second, serve the engine whenever its descriptor says so.
    let mut wakeups = 0;
    let start = Instant::now();
    let mut events = [EpollEvent::default(); 1];
    while start.elapsed() < Duration::from_secs(1) {
        if watch.wait(100, &mut events).unwrap_or(0) > 0 {
            wakeups += 1;
            engine.poll_host(&mut link);
        }
    }
    let failures = engine.counters().accept_failures;
    assert!(failures >= 1, "accept failed");
    // Ticks every 100 ms and one accept attempt per pause: about 10 to 20.
    assert!(
        wakeups <= 40,
        "{wakeups} wakeups in a second ({failures} failed accepts): spinning"
    );
    assert!(link.take().is_empty());

    // Guest datagrams that each need a socket: dropped, with a few warnings, not one each.
    for sport in 0..200u16 {
        let datagram = common::udp(GUEST_IP, 6000 + sport, GATEWAY, port, b"x");
        let frame = common::ipv4_frame(
            GUEST_IP,
            GATEWAY,
            smoltcp::wire::IpProtocol::Udp,
            &datagram,
            &common::IpOpts::default(),
        );
        engine.handle_frame(&frame[..], &mut link);
    }
    assert_eq!(engine.open_flows().1, 0, "no socket, no flow");
    let warnings = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("UDP socket:"))
        .count();
    assert!(
        (1..=6).contains(&warnings),
        "{warnings} warnings for 200 datagrams"
    );

    // Descriptors free up: the waiting client is taken, the guest gets our SYN.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    let syn = loop {
        if watch.wait(100, &mut events).unwrap_or(0) > 0 {
            engine.poll_host(&mut link);
        }
        if let Some(frame) = link.take().pop() {
            break frame;
        }
        assert!(Instant::now() < deadline, "the client was never accepted");
    };
    let eth = EthernetFrame::new_checked(&syn[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.syn() && !tcp.ack());
    assert_eq!(tcp.dst_port(), GUEST_PORT);
    println!("{wakeups} wakeups in a second while out of descriptors, {failures} failed accepts");
}
