//! Several queue pairs, one engine each: a flow stays on the pair that saw its first frame, a
//! frame of it that arrives on another pair reaches it there, forwards wait for a pair to be
//! used, and runtime control's answers cover every engine.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{GATEWAY, GUEST_IP, IpOpts, arp_request, ipv4_frame, tcp_syn, udp};
use netcore::control::Control;
use netcore::queue_pairs::QueuePairs;
use netcore::{Engine, EngineOptions, MemoryLink};
use netplan::{HostListen, NetPlan, PortForward, PortRange, Proto};
use smoltcp::wire::IpProtocol;

const GUEST_PORT: u16 = 5000;

/// The engines of `count` pairs sharing `control`.
fn engines(count: u16, control: &Arc<Control>) -> Vec<Engine> {
    let plan = NetPlan::slirp_default();
    let pairs = QueuePairs::new(count, &plan).unwrap();
    (0..count)
        .map(|index| {
            let options = EngineOptions {
                max_flows: 16,
                control: Arc::clone(control),
                queue_pair: pairs.pair(index),
                ..EngineOptions::default()
            };
            Engine::with_options(plan.clone(), options).unwrap()
        })
        .collect()
}

fn guest_udp(dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let std::net::IpAddr::V4(ip) = dst.ip() else {
        panic!("an IPv4 destination");
    };
    let datagram = udp(GUEST_IP, GUEST_PORT, ip, dst.port(), payload);
    ipv4_frame(GUEST_IP, ip, IpProtocol::Udp, &datagram, &IpOpts::default())
}

/// Polls `engine`'s host side until `done`, for at most 5 s.
fn poll_until(engine: &mut Engine, link: &mut MemoryLink, done: impl Fn(&Engine) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(engine) {
        assert!(Instant::now() < deadline, "nothing happened in 5 s");
        engine.poll_host(link);
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_datagram_arriving_on_another_pair_leaves_from_its_flows_socket() {
    let control = Arc::new(Control::default());
    let mut e = engines(2, &control);
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let dst = SocketAddr::from((GATEWAY, server.local_addr().unwrap().port()));
    let mut buf = [0u8; 64];

    let mut link0 = MemoryLink::new();
    e[0].handle_frame(&guest_udp(dst, b"first")[..], &mut link0);
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"first");

    // The guest's socket moved to the other vCPU: its next datagram comes on pair 1.
    let mut link1 = MemoryLink::new();
    e[1].handle_frame(&guest_udp(dst, b"second")[..], &mut link1);
    assert_eq!(e[1].counters().tx_handed_off, 1);
    assert_eq!(e[1].open_flows().1, 0, "pair 1 made no flow of its own");
    poll_until(&mut e[0], &mut link0, |e| e.udp_counters().to_host == 2);
    let (n, again) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"second");
    assert_eq!(again, from, "the same host socket, so the same source port");

    // Handed over and then sent on the holder's own queue: the holder takes the handed one
    // first, as the guest sent it first, without waiting for its inbox's event.
    e[1].handle_frame(&guest_udp(dst, b"third")[..], &mut link1);
    e[0].handle_frame(&guest_udp(dst, b"fourth")[..], &mut link0);
    for want in [&b"third"[..], b"fourth"] {
        let (n, again) = server.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], again), (want, from));
    }
    let frames = |e: &Engine| e.counters().tx_frames;
    assert_eq!(
        (frames(&e[0]), frames(&e[1])),
        (2, 2),
        "each frame counted once, on the pair it came on"
    );

    // The answer goes back on the pair that holds the flow.
    server.send_to(b"answer", from).unwrap();
    poll_until(&mut e[0], &mut link0, |e| e.udp_counters().to_guest == 1);
    assert_eq!(link0.take().len(), 1);
    assert!(link1.take().is_empty());
}

#[test]
fn a_segment_of_a_connection_another_pair_holds_goes_there() {
    let control = Arc::new(Control::default());
    let mut e = engines(2, &control);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let syn = |seq| {
        ipv4_frame(
            GUEST_IP,
            GATEWAY,
            IpProtocol::Tcp,
            &tcp_syn(GUEST_PORT, port, seq),
            &IpOpts::default(),
        )
    };
    let mut link0 = MemoryLink::new();
    e[0].handle_frame(&syn(1000)[..], &mut link0);
    assert_eq!(e[0].open_flows().0, 1);
    // Its retransmission, from the other vCPU.
    let mut link1 = MemoryLink::new();
    e[1].handle_frame(&syn(1000)[..], &mut link1);
    assert_eq!(e[1].counters().tx_handed_off, 1);
    assert_eq!(e[1].open_flows().0, 0);
    assert!(link1.take().is_empty(), "no reset from the pair without it");
    // Pair 0 takes it in with its next frame: still the one connection.
    e[0].handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut link0);
    assert_eq!(
        e[0].counters().tx_frames,
        2,
        "the handed frame counted on pair 1"
    );
    assert_eq!(e[0].open_flows().0, 1, "still the one connection");
    let single = Arc::new(Control::default());
    let mut alone = engines(1, &single);
    alone[0].handle_frame(&syn(1000)[..], &mut MemoryLink::new());
    assert_eq!(
        alone[0].counters().tx_handed_off,
        0,
        "one pair hands nothing"
    );
}

fn tcp_forward(port: u16) -> PortForward {
    PortForward {
        proto: Proto::Tcp,
        host: HostListen::Inet {
            addr: Some("127.0.0.1".parse().unwrap()),
            iface: None,
            ports: PortRange::single(port),
        },
        guest_addr: None,
        guest_port: 80,
        skip_ephemeral: false,
    }
}

/// The forward's port, bound on any free port.
fn forward(control_rules: &mut Vec<(PortForward, Vec<netcore::forward::ForwardSocket>)>) -> u16 {
    let spec = tcp_forward(0);
    let sockets = netcore::forward::open_one(&spec).unwrap();
    let port = {
        use std::os::fd::AsFd;
        let sock = sockets[0].as_fd().try_clone_to_owned().unwrap();
        TcpListener::from(sock).local_addr().unwrap().port()
    };
    control_rules.push((spec, sockets));
    port
}

#[test]
fn a_pair_takes_forwarded_connections_only_once_the_guest_used_it() {
    let mut rules = Vec::new();
    let port = forward(&mut rules);
    let control = Arc::new(Control::fixed(rules));
    let mut e = engines(2, &control);
    let (mut link0, mut link1) = (MemoryLink::new(), MemoryLink::new());

    let _first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for _ in 0..20 {
        e[1].poll_host(&mut link1);
    }
    // Pair 1 has carried nothing, so the connection waited for pair 0.
    poll_until(&mut e[0], &mut link0, |e| e.open_flows().0 == 1);
    assert_eq!(e[1].open_flows().0, 0);

    // The guest sends on pair 1: from now on it takes connections too.
    e[1].handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut link1);
    let _second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    poll_until(&mut e[1], &mut link1, |e| e.open_flows().0 == 1);
    assert_eq!(
        link1.take().len(),
        2,
        "its ARP reply, then its SYN to the guest"
    );
}

#[test]
fn runtime_control_waits_for_every_pair_and_sums_their_statistics() {
    let control = Arc::new(Control::new(Vec::new()).unwrap());
    let mut e = engines(2, &control);
    e[0].handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut MemoryLink::new());
    for _ in 0..2 {
        e[1].handle_frame(&arp_request(GUEST_IP, GATEWAY)[..], &mut MemoryLink::new());
    }
    let c = Arc::clone(&control);
    let asker = std::thread::spawn(move || c.stats());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !asker.is_finished() {
        assert!(Instant::now() < deadline, "no answer in 5 s");
        for engine in &mut e {
            engine.on_control_event();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = asker.join().unwrap().expect("both engines answered");
    assert_eq!(stats.engine.tx_frames, 3);
    assert_eq!(stats.engine.arp_replies, 3);
}
