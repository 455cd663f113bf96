//! The synthetic driver against the real backend, briefly: both feature sets, both directions,
//! every byte checked, nothing lost. What `synthetic-datapath` measures, as a test.

use std::time::Duration;

use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};
use vnu_perf::synth::peer::{Pattern, Peer, PeerRole};
use vnu_perf::synth::ring::{Device, DriverConfig};
use vnu_perf::synth::session::{Counters, Role, Session, SessionConfig};
use vnu_perf::synth::wire;
use vnu_tests::Backend;

/// The host end of one connection: a checking sink (guest→host) or a source.
fn host_peer(role: Role) -> Peer {
    let role = match role {
        Role::Send => PeerRole::Sink { verify: true },
        Role::Receive => PeerRole::Source,
    };
    Peer::start(role, None).unwrap()
}

/// Enough bytes went both through the guest and through the host end, with no gap and no
/// resend.
fn assert_moved_cleanly(what: &str, c: &Counters, moved: u64) {
    assert!(
        c.data_bytes > 100_000,
        "{what}: only {} bytes",
        c.data_bytes
    );
    assert!(moved > 100_000, "{what}: the host side moved {moved} bytes");
    assert_eq!(
        (c.out_of_order, c.go_back_dupack, c.go_back_timeout),
        (0, 0, 0),
        "{what}: {c:?}"
    );
}

fn exchange(backend: &Backend, offload: bool, event_idx: bool, role: Role, port: u16) {
    let mut features = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF;
    if offload {
        features |= 1 << VIRTIO_NET_F_CSUM
            | 1 << VIRTIO_NET_F_GUEST_CSUM
            | 1 << VIRTIO_NET_F_HOST_TSO4
            | 1 << VIRTIO_NET_F_GUEST_TSO4;
    }
    if event_idx {
        features |= 1 << VIRTIO_RING_F_EVENT_IDX;
    }
    let peer = host_peer(role);
    let mut pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
    let mut device = Device::connect(
        backend.socket(),
        DriverConfig {
            features,
            queue_size: 256,
            rx_buffer: if offload { 4096 } else { 1536 },
            pattern_len: pattern.bytes().len(),
            queue_pairs: 1,
            // Without offloads, whole frames in one descriptor, as Linux sends them.
            linear_tx: (!offload).then_some(1514),
        },
    )
    .unwrap();
    let driver = &mut device.pairs[0];
    driver
        .memory()
        .write_slice(pattern.bytes(), GuestAddress(driver.pattern_addr()))
        .unwrap();
    let config = smoke_config(role, offload, peer.port(), port);
    let what = format!("offload {offload}, event_idx {event_idx}, {role:?}");
    let outcome = Session::new(driver, &mut pattern, config)
        .run(|_| {})
        .unwrap_or_else(|e| panic!("{what}: {e}\nbackend log:\n{}", backend.log()));
    drop(device);
    let moved = peer.bytes();
    peer.finish()
        .unwrap_or_else(|e| panic!("{what}: host side: {e}"));
    let c = outcome.end.1;
    assert_moved_cleanly(&what, &c, moved);
    if offload && role == Role::Receive {
        assert!(c.gso_frames > 0, "{what}: no GSO frame received: {c:?}");
    }
    if !offload && role == Role::Receive {
        assert_eq!(c.gso_frames, 0, "{what}: GSO frame without GUEST_TSO4");
    }
}

/// One short, checked session of the smoke tests: Linux's loss recovery, a 4 MiB window, a
/// fraction of a second, from `local_port` to the peer's `port`.
fn smoke_config(role: Role, offload: bool, port: u16, local_port: u16) -> SessionConfig {
    SessionConfig {
        role,
        offload,
        tso_payload: 64240,
        mss: wire::MSS,
        rto: Duration::from_millis(200),
        dupack_threshold: 3,
        rcv_window: 4 << 20,
        verify: true,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(300),
        port,
        local_port,
    }
}

#[test]
fn synthetic_guest_moves_data_both_ways_with_and_without_offloads() {
    let backend = Backend::start(&[]).expect("start vhost-net-user");
    let mut port = 41000;
    for offload in [true, false] {
        for event_idx in [false, true] {
            for role in [Role::Send, Role::Receive] {
                port += 1;
                exchange(&backend, offload, event_idx, role, port);
            }
        }
    }
}

/// Two queue pairs, one connection on each, each pair driven by its own thread: both carry
/// data, both ways, intact (the backend keeps a flow on the pair its first frame came from).
#[test]
fn synthetic_guest_moves_data_on_two_queue_pairs() {
    let backend = Backend::start(&[]).expect("start vhost-net-user");
    let mut port = 42000;
    for role in [Role::Send, Role::Receive] {
        let peers: Vec<Peer> = (0..2).map(|_| host_peer(role)).collect();
        let pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
        let mut device = Device::connect(
            backend.socket(),
            DriverConfig {
                features: 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF,
                queue_size: 256,
                rx_buffer: 1536,
                pattern_len: pattern.bytes().len(),
                queue_pairs: 2,
                linear_tx: Some(1514),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nbackend log:\n{}", backend.log()));
        device
            .memory()
            .unwrap()
            .write_slice(
                pattern.bytes(),
                GuestAddress(device.pairs[0].pattern_addr()),
            )
            .unwrap();
        port += 2;
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = device
                .pairs
                .iter_mut()
                .zip(&peers)
                .enumerate()
                .map(|(k, (driver, peer))| {
                    let config = smoke_config(role, false, peer.port(), port + k as u16);
                    scope.spawn(move || {
                        let mut pattern = Pattern::new(wire::MAX_IP_PAYLOAD);
                        Session::new(driver, &mut pattern, config).run(|_| {})
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        drop(device);
        for (k, (outcome, peer)) in outcomes.into_iter().zip(peers).enumerate() {
            let what = format!("pair {k}, {role:?}");
            let c = outcome
                .unwrap_or_else(|e| panic!("{what}: {e}\nbackend log:\n{}", backend.log()))
                .end
                .1;
            let moved = peer.bytes();
            peer.finish()
                .unwrap_or_else(|e| panic!("{what}: host side: {e}"));
            assert_moved_cleanly(&what, &c, moved);
        }
    }
}
