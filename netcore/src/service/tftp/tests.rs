//! The TFTP server against files in a directory of its own, every reply read back from its
//! frame after its headers are checked.

use std::net::{Ipv4Addr, Ipv6Addr};

use vmm_sys_util::tempdir::TempDir;

use super::files::walk_beneath;
use super::*;
use crate::wire::ipv4;

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const GATEWAY_MAC: MacAddr = MacAddr([0x52, 0x55, 10, 0, 2, 2]);

/// A server over a directory of its own, and a clock the test moves.
struct Rig {
    server: Server,
    ident: Ident,
    now: Instant,
    dir: TempDir,
}

/// A reply, read back from its frame after checking every header.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Data(u16, Vec<u8>),
    Oack(Vec<(String, String)>),
    Error(u16, String),
}

fn rig(files: &[(&str, &[u8])]) -> Rig {
    let dir = TempDir::new_with_prefix("/tmp/vnu-tftp-").expect("temp dir");
    for (name, data) in files {
        let path = dir.as_path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let mut plan = NetPlan::slirp_default();
    plan.tftp_root = Some(dir.as_path().to_owned());
    Rig {
        server: Server::new(&plan),
        ident: Ident::new(),
        now: Instant::now(),
        dir,
    }
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut m = OP_RRQ.to_be_bytes().to_vec();
    for part in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m
}

fn ack(block: u16) -> Vec<u8> {
    [OP_ACK.to_be_bytes(), block.to_be_bytes()].concat()
}

impl Rig {
    fn send_from(&mut self, client: SocketAddr, server: IpAddr, msg: &[u8]) -> Option<Vec<u8>> {
        let mut ex = Exchange {
            addrs: Addrs::new(client.ip(), server).expect("one family"),
            client_port: client.port(),
            guest_mac: GUEST_MAC,
            gateway_mac: GATEWAY_MAC,
            ident: &mut self.ident,
            now: self.now,
        };
        let mut out = Vec::new();
        match self.server.handle(&mut ex, msg, &mut out) {
            Verdict::Reply => Some(out),
            Verdict::Consumed => None,
            other => panic!("{other:?} for {msg:?}"),
        }
    }

    /// Sends `msg` from guest port `port` to 10.0.2.2:69; the reply, its headers checked.
    fn send(&mut self, port: u16, msg: &[u8]) -> Option<Reply> {
        let client = SocketAddr::new(GUEST.into(), port);
        let frame = self.send_from(client, GATEWAY.into(), msg)?;
        assert_eq!(&frame[0..6], &GUEST_MAC.0);
        assert_eq!(&frame[6..12], &GATEWAY_MAC.0);
        let ip = ipv4::parse(&frame[14..], frame.len() - 14).expect("a valid IPv4 header");
        assert_eq!((ip.src, ip.dst, ip.tos, ip.ttl), (GATEWAY, GUEST, 0x10, 64));
        let addrs = Addrs::V4 {
            src: ip.src,
            dst: ip.dst,
        };
        let udp = udp::parse(&addrs, &frame[34..34 + ip.payload_len]);
        let udp = udp.expect("a UDP checksum that holds").payload;
        assert_eq!(&frame[34..36], &SERVER_PORT.to_be_bytes());
        assert_eq!(&frame[36..38], &port.to_be_bytes());
        Some(decode(udp))
    }

    fn later(&mut self, by: Duration) {
        self.now += by;
    }
}

fn decode(msg: &[u8]) -> Reply {
    let op = u16::from_be_bytes([msg[0], msg[1]]);
    let strings = |b: &[u8]| -> Vec<String> {
        let b = b.strip_suffix(&[0]).expect("ends in a zero");
        b.split(|&c| c == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    };
    match op {
        OP_DATA => Reply::Data(u16::from_be_bytes([msg[2], msg[3]]), msg[4..].to_vec()),
        OP_OACK => {
            let s = strings(&msg[2..]);
            Reply::Oack(s.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
        }
        OP_ERROR => Reply::Error(
            u16::from_be_bytes([msg[2], msg[3]]),
            strings(&msg[4..]).concat(),
        ),
        other => panic!("opcode {other}"),
    }
}

fn data(block: u16, bytes: &[u8]) -> Option<Reply> {
    Some(Reply::Data(block, bytes.to_vec()))
}

fn error((code, text): (u16, &str)) -> Option<Reply> {
    Some(Reply::Error(code, text.to_owned()))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_file_comes_in_512_byte_blocks_each_brought_by_the_ack_of_the_one_before() {
    let file = pattern(1300);
    let mut r = rig(&[("boot.img", &file)]);
    assert_eq!(r.send(1001, &rrq("boot.img", &[])), data(1, &file[..512]));
    assert_eq!(r.send(1001, &ack(1)), data(2, &file[512..1024]));
    assert_eq!(r.send(1001, &ack(2)), data(3, &file[1024..]));
    assert_eq!(
        r.server.sessions(),
        1,
        "kept until the last block is acknowledged"
    );
    assert_eq!(r.send(1001, &ack(3)), None);
    assert_eq!(r.server.sessions(), 0);
    let c = r.server.counters;
    assert_eq!((c.transfers, c.completed, c.data_blocks), (1, 1, 3));
}

#[test]
fn a_file_of_whole_blocks_ends_with_an_empty_one_and_an_empty_file_with_one() {
    let file = pattern(1024);
    let mut r = rig(&[("even", &file), ("empty", b"")]);
    assert_eq!(r.send(7, &rrq("even", &[])), data(1, &file[..512]));
    assert_eq!(r.send(7, &ack(1)), data(2, &file[512..]));
    assert_eq!(r.send(7, &ack(2)), data(3, b""));
    assert_eq!(r.send(8, &rrq("empty", &[])), data(1, b""));
}

#[test]
fn tsize_and_blksize_are_answered_in_an_oack_and_blksize_is_capped() {
    let file = pattern(3000);
    let mut r = rig(&[("f", &file)]);
    let oack = Reply::Oack(vec![
        ("tsize".into(), "3000".into()),
        ("blksize".into(), "1428".into()),
    ]);
    let asked = rrq("f", &[("tsize", "0"), ("blksize", "1468")]);
    assert_eq!(r.send(9, &asked), Some(oack));
    assert_eq!(r.send(9, &ack(0)), data(1, &file[..1428]));
    assert_eq!(r.send(9, &ack(1)), data(2, &file[1428..2856]));
    assert_eq!(r.send(9, &ack(2)), data(3, &file[2856..]));
    // Options are matched without case, unknown ones skipped, a non-zero tsize echoed,
    // and a blksize that is not a positive number ignored.
    let oack = Reply::Oack(vec![("tsize".into(), "77".into())]);
    let asked = rrq(
        "f",
        &[("windowsize", "4"), ("TSIZE", "77"), ("blksize", "x")],
    );
    assert_eq!(r.send(10, &asked), Some(oack));
    assert_eq!(r.send(10, &ack(0)), data(1, &file[..512]));
    // Only the first two answered options count; a blksize after them is not applied.
    let asked = rrq(
        "f",
        &[("blksize", "8"), ("tsize", "0"), ("blksize", "1000")],
    );
    let oack = Reply::Oack(vec![
        ("blksize".into(), "8".into()),
        ("tsize".into(), "3000".into()),
    ]);
    assert_eq!(r.send(11, &asked), Some(oack));
    assert_eq!(r.send(11, &ack(0)), data(1, &file[..8]));
}

#[test]
fn blksize_is_capped_to_what_fits_the_link_mtu() {
    let mut r = rig(&[("f", &pattern(3000))]);
    r.server.mtu = 1000;
    let oack = |n: &str| Some(Reply::Oack(vec![("blksize".into(), n.into())]));
    // 1000 - 20 (IPv4) - 8 (UDP) - 4 (TFTP)
    assert_eq!(r.send(1, &rrq("f", &[("blksize", "1428")])), oack("968"));
    assert_eq!(r.send(2, &rrq("f", &[("blksize", "900")])), oack("900"));
    r.server.mtu = 576;
    assert_eq!(r.send(3, &rrq("f", &[("blksize", "1428")])), oack("544"));
    r.server.mtu = 300;
    assert_eq!(r.send(4, &rrq("f", &[("blksize", "1428")])), oack("512"));
}

#[test]
fn requests_slirp_refuses_get_slirps_errors() {
    let mut r = rig(&[("f", b"x"), ("sub/g", b"y")]);
    std::fs::create_dir(r.dir.as_path().join("d")).unwrap();
    let mut netascii = rrq("f", &[]);
    netascii.truncate(netascii.len() - 6);
    netascii.extend_from_slice(b"netascii\0");
    assert_eq!(r.send(1, &netascii), error(UNSUPPORTED_MODE));
    for name in ["../f", "sub/../f", "sub/", "", "..", "sub/.."] {
        assert_eq!(
            r.send(1, &rrq(name, &[])),
            error(ACCESS_VIOLATION),
            "{name:?}"
        );
    }
    for name in ["missing", "d"] {
        assert_eq!(
            r.send(1, &rrq(name, &[])),
            error(FILE_NOT_FOUND),
            "{name:?}"
        );
    }
    // A name without its zero, a mode cut short, an option without a value, or a request
    // not ending in a zero.
    assert_eq!(r.send(1, &[0, 1, b'f']), error(ACCESS_VIOLATION));
    assert_eq!(r.send(1, b"\0\x01f\0oct"), error(ACCESS_VIOLATION));
    assert_eq!(
        r.send(1, b"\0\x01f\0octet\0tsize\0"),
        error(ACCESS_VIOLATION)
    );
    assert_eq!(
        r.send(1, b"\0\x01f\0octet\0tsize\x000"),
        error(ACCESS_VIOLATION)
    );
    assert_eq!(r.server.sessions(), 0, "errors end their sessions");
    // A leading '/' stays under the root; the mode is matched without case.
    assert_eq!(r.send(2, &rrq("/sub/g", &[])), data(1, b"y"));
    assert_eq!(r.send(3, b"\0\x01f\0OCTET\0"), data(1, b"x"));
    assert_eq!(r.server.counters.errors_sent, 13);
}

/// Links are never followed, wherever they point: a file link out of the root, a directory
/// link out of it, and even a link to a file inside it (RESOLVE_NO_SYMLINKS, as the
/// issue asks; the root itself may be reached through links, it is the operator's).
#[test]
fn symbolic_links_under_the_root_are_not_followed() {
    let outside = TempDir::new_with_prefix("/tmp/vnu-tftp-outside-").expect("temp dir");
    std::fs::write(outside.as_path().join("secret"), b"host file").unwrap();
    let mut r = rig(&[("f", b"x"), ("sub/g", b"y")]);
    let root = r.dir.as_path().to_owned();
    let link = |target: &std::path::Path, name: &str| {
        std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    };
    link(&outside.as_path().join("secret"), "pw");
    link(outside.as_path(), "d");
    link(std::path::Path::new("f"), "inside");
    link(std::path::Path::new("sub"), "sublink");
    for name in ["pw", "d/secret", "/d/secret", "inside", "sublink/g"] {
        assert_eq!(
            r.send(1, &rrq(name, &[])),
            error(FILE_NOT_FOUND),
            "{name:?}"
        );
    }
    assert_eq!(r.send(2, &rrq("sub/g", &[])), data(1, b"y"));
    assert_eq!(r.send(3, &rrq("./f", &[])), data(1, b"x"));
    assert_eq!(r.send(4, &rrq("sub//g", &[])), data(1, b"y"));
}

/// The walk used where openat2 is missing refuses the same links.
#[test]
fn the_openat_walk_follows_no_link_either() {
    use rustix::fs::{Mode, OFlags};
    let r = rig(&[("f", b"x"), ("sub/g", b"y")]);
    let root = r.dir.as_path();
    std::os::unix::fs::symlink("sub", root.join("sublink")).unwrap();
    std::os::unix::fs::symlink("f", root.join("flink")).unwrap();
    let open = |name: &str| {
        let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        walk_beneath(dir, name.as_bytes(), OFlags::RDONLY | OFlags::NOFOLLOW).map(|fd| {
            std::fs::read_to_string(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ))
            .unwrap()
        })
    };
    assert_eq!(open("sub/g").as_deref(), Some("y"));
    assert_eq!(open("/./sub//g").as_deref(), Some("y"));
    assert_eq!(open("f").as_deref(), Some("x"));
    assert_eq!(open("sublink/g"), None);
    assert_eq!(open("flink"), None);
    assert_eq!(open(""), None);
}

#[test]
fn without_a_root_every_request_is_an_access_violation() {
    let mut r = rig(&[("f", b"x")]);
    r.server.root = None;
    assert_eq!(r.send(5, &rrq("f", &[])), error(ACCESS_VIOLATION));
    assert_eq!(r.server.sessions(), 0);
}

#[test]
fn a_re_acknowledged_block_is_sent_again_but_not_for_a_duplicate_in_quick_succession() {
    let file = pattern(2000);
    let mut r = rig(&[("f", &file)]);
    assert_eq!(r.send(3, &rrq("f", &[])), data(1, &file[..512]));
    assert_eq!(r.send(3, &ack(1)), data(2, &file[512..1024]));
    // Block 2 was lost; the client acknowledges block 1 again once it times out.
    r.later(Duration::from_millis(50));
    assert_eq!(
        r.send(3, &ack(1)),
        None,
        "too soon: a duplicate, not a timeout"
    );
    r.later(RESEND_AFTER);
    assert_eq!(r.send(3, &ack(1)), data(2, &file[512..1024]));
    assert_eq!(r.send(3, &ack(7)), None, "a block never sent");
    assert_eq!(r.send(3, &ack(2)), data(3, &file[1024..1536]));
    assert_eq!(r.send(3, &ack(3)), data(4, &file[1536..]));
    // The last block can be asked for again too.
    r.later(RESEND_AFTER);
    assert_eq!(r.send(3, &ack(3)), data(4, &file[1536..]));
    assert_eq!(r.send(3, &ack(4)), None);
    assert_eq!(r.server.counters.resent, 2);
    assert_eq!(r.send(3, &ack(4)), None, "the session is gone");
}

#[test]
fn block_numbers_wrap_past_65535() {
    let file = pattern(65_540);
    let mut r = rig(&[("f", &file)]);
    let oack = Reply::Oack(vec![("blksize".into(), "1".into())]);
    assert_eq!(r.send(4, &rrq("f", &[("blksize", "1")])), Some(oack));
    let mut reply = r.send(4, &ack(0));
    for n in 1..=65_540u32 {
        assert_eq!(
            reply,
            data(n as u16, &file[n as usize - 1..n as usize]),
            "block {n}"
        );
        reply = r.send(4, &ack(n as u16));
    }
    assert_eq!(reply, data(65_541u32 as u16, b""));
}

#[test]
fn twenty_sessions_at_most_each_free_after_five_idle_seconds() {
    let mut r = rig(&[("f", &pattern(5000))]);
    for port in 0..20 {
        assert!(matches!(
            r.send(100 + port, &rrq("f", &[])),
            Some(Reply::Data(1, _))
        ));
    }
    assert_eq!(r.send(200, &rrq("f", &[])), None, "all busy");
    assert_eq!(r.server.counters.busy, 1);
    // A client's new request restarts its own session.
    assert_eq!(
        r.send(105, &ack(1)).map(|d| matches!(d, Reply::Data(2, _))),
        Some(true)
    );
    assert!(matches!(
        r.send(105, &rrq("f", &[])),
        Some(Reply::Data(1, _))
    ));
    r.later(Duration::from_secs(4));
    assert!(matches!(r.send(105, &ack(1)), Some(Reply::Data(2, _))));
    r.later(Duration::from_millis(1500));
    // 5.5 s since the others' last message: their places are free; 105's is not.
    assert!(matches!(
        r.send(200, &rrq("f", &[])),
        Some(Reply::Data(1, _))
    ));
    assert_eq!(r.server.sessions(), 20);
    assert!(matches!(r.send(105, &ack(2)), Some(Reply::Data(3, _))));
}

#[test]
fn an_error_from_the_client_ends_its_session_and_writes_are_not_served() {
    let mut r = rig(&[("f", &pattern(2000))]);
    assert!(r.send(6, &rrq("f", &[])).is_some());
    assert_eq!(r.send(6, &[0, OP_ERROR as u8, 0, 0, 0]), None);
    assert_eq!(r.server.sessions(), 0);
    assert_eq!(r.send(6, &ack(1)), None);
    assert_eq!(r.send(6, b"\0\x02f\0octet\0"), None, "WRQ");
    assert_eq!(r.server.counters.ignored, 2);
}

#[test]
fn over_ipv6_replies_come_from_the_gateway_as_slirp_frames_them() {
    let file = pattern(600);
    let mut r = rig(&[("f", &file)]);
    let guest: Ipv6Addr = "fec0::5054:ff:fe12:3456".parse().unwrap();
    let gateway: Ipv6Addr = "fec0::2".parse().unwrap();
    let client = SocketAddr::new(guest.into(), 2000);
    let frame = r.send_from(client, gateway.into(), &rrq("f", &[])).unwrap();
    assert_eq!(&frame[6..12], &MacAddr::slirp_for_ipv6(gateway).0);
    assert_eq!(&frame[12..14], &[0x86, 0xdd]);
    assert_eq!(frame[14 + 7], 255, "hop limit");
    assert_eq!(&frame[22..38], &gateway.octets());
    assert_eq!(&frame[38..54], &guest.octets());
    let len = frame.len() - 54;
    let addrs = Addrs::V6 {
        src: gateway,
        dst: guest,
    };
    let udp = udp::parse(&addrs, &frame[54..54 + len])
        .expect("checksum")
        .payload;
    assert_eq!(decode(udp), Reply::Data(1, file[..512].to_vec()));
}

#[test]
fn atoi_reads_as_c_does() {
    for (text, value) in [
        ("512", 512),
        ("  42x", 42),
        ("-3", -3),
        ("+9", 9),
        ("", 0),
        ("abc", 0),
        ("99999999999", i64::from(i32::MAX)),
    ] {
        assert_eq!(atoi(text.as_bytes()), value, "{text:?}");
    }
}
