//! The emulated servers' parsers on their own (DHCP, DHCPv6, NDP, TFTP): each input is a plan
//! variant and a sequence of guest messages, mostly wrapped in well-formed headers with valid
//! checksums so that the fuzzer spends its time in the message bodies, sometimes raw.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netcore::service::{Verdict, dhcp, dhcpv6, ndp, tftp};
use netcore::wire::ip::{Addrs, GuestHeader, GuestPacket};
use netcore::wire::ipv4::Ident;
use netcore::wire::{ipv6, udp};
use netplan::{MacAddr, NetPlan};

use crate::bytes::*;

/// A plan varied by `flags`: the DHCP options it hands out, restriction, MTU, IPv6 guest
/// address, boot file.
fn plan(flags: u8) -> NetPlan {
    let mut plan = NetPlan::slirp_default();
    plan.dhcp.pool_size = [16, 1, 2, 255][usize::from(flags & 3)];
    if flags & 4 != 0 {
        plan.dhcp.hostname = Some("guest-host".into());
        plan.dhcp.domain_name = Some("example.test".into());
        plan.dhcp.mtu_option = Some(1400);
        plan.dhcp.search = vec![
            "example.test".into(),
            "a.example.test".into(),
            "b".repeat(60) + ".example.test",
        ];
    }
    if flags & 8 != 0 {
        plan.dhcp.bootfile = Some("pxelinux.0".into());
        plan.dhcp.tftp_server_name = Some("tftp.example.test".into());
    }
    plan.restrict = flags & 16 != 0;
    plan.mtu = [1500, 576, 9000, 1280][usize::from(flags >> 5 & 3)];
    if flags & 128 != 0
        && let Some(v6) = plan.ipv6.as_mut()
    {
        v6.guest_addr = Some(GUEST_IP6);
    }
    plan
}

/// An answer frame must fit the link.
fn check_answer(plan: &NetPlan, verdict: Verdict, out: &[u8]) {
    if verdict == Verdict::Reply {
        assert!(out.len() >= 14, "answer of {} bytes", out.len());
        assert!(
            out.len() <= 14 + usize::from(plan.mtu).max(1500),
            "answer of {} bytes over the MTU {}",
            out.len(),
            plan.mtu
        );
    }
}

/// DHCPv4: BOOTP messages to the server (broadcast or gateway), or raw frames.
pub fn dhcp(data: &[u8]) {
    let mut input = Input::new(data);
    let plan = plan(input.u8());
    let mut server = dhcp::Server::new(&plan);
    let mut ident = Ident::new();
    let mut out = Vec::new();
    while !input.is_empty() {
        let how = input.u8();
        let body = input.chunk();
        let frame = if how & 3 == 3 {
            body.to_vec()
        } else {
            let (src, dst) = match how & 3 {
                0 => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
                1 => (GUEST_IP, GATEWAY),
                _ => (GUEST_IP, Ipv4Addr::BROADCAST),
            };
            let mut bootp = Vec::with_capacity(240 + body.len());
            if how & 4 != 0 {
                // A fixed part that passes the first checks, then the fuzzed options.
                bootp.resize(236, 0);
                bootp[0] = 1; // BOOTREQUEST
                bootp[1] = 1;
                bootp[2] = 6;
                bootp[28..34].copy_from_slice(&GUEST_MAC);
                bootp.extend_from_slice(&[99, 130, 83, 99]);
            }
            bootp.extend_from_slice(body);
            let dgram = udp(68, 67, &bootp);
            ip_frame(src.into(), dst.into(), PROTO_UDP, 64, &dgram, how & 8 == 0)
        };
        // As the engine hands it over: a checked IPv4 header and a checked datagram.
        let Some(ip) = GuestPacket::ipv4(&frame, frame.len()) else {
            continue;
        };
        let GuestHeader::V4(v4) = ip.header else {
            continue;
        };
        let Some(request) = udp::parse_in(&ip, &frame) else {
            continue;
        };
        out.clear();
        let v = server.handle(&plan, &mut ident, v4.dst, &request, &mut out);
        check_answer(&plan, v, &out);
    }
}

/// The IPv6 header of `frame`, as the engine parses it, and the message after it.
fn v6_packet(frame: &[u8]) -> Option<(ipv6::GuestHeader, &[u8])> {
    let ip = GuestPacket::ipv6(frame, frame.len())?;
    let GuestHeader::V6(v6) = ip.header else {
        return None;
    };
    Some((v6, ip.payload(frame)?))
}

/// DHCPv6: messages to all DHCP agents or the gateway, or raw frames.
pub fn dhcpv6(data: &[u8]) {
    let mut input = Input::new(data);
    let plan = plan(input.u8());
    let mut out = Vec::new();
    while !input.is_empty() {
        let how = input.u8();
        let body = input.chunk();
        let frame = if how & 3 == 3 {
            body.to_vec()
        } else {
            let dst: Ipv6Addr = if how & 1 == 0 {
                "ff02::1:2".parse().unwrap()
            } else {
                GATEWAY6
            };
            let dgram = udp(546, 547, body);
            ip_frame(
                GUEST_LINK_LOCAL.into(),
                dst.into(),
                PROTO_UDP,
                1,
                &dgram,
                true,
            )
        };
        let Some((v6, l4)) = v6_packet(&frame) else {
            continue;
        };
        let port = l4.get(2..4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
        let _ = dhcpv6::is_request(&plan, v6.dst, port);
        let Some(request) = udp::Datagram::unchecked(l4) else {
            continue;
        };
        out.clear();
        let v = dhcpv6::handle(&plan, MacAddr(GUEST_MAC), v6.src, &request, &mut out);
        check_answer(&plan, v, &out);
    }
}

/// NDP and ICMPv6: messages from the guest's addresses to the router, the emulated hosts and
/// multicast groups, checksummed or not; and ICMPv6 errors quoting them.
pub fn ndp(data: &[u8]) {
    let mut input = Input::new(data);
    let plan = plan(input.u8());
    let v6plan = plan.ipv6.clone().expect("the plan has IPv6");
    let mut out = Vec::new();
    while !input.is_empty() {
        let how = input.u8();
        let body = input.chunk();
        let frame = if how & 3 == 3 {
            body.to_vec()
        } else {
            let src = [
                Ipv6Addr::UNSPECIFIED,
                GUEST_LINK_LOCAL,
                GUEST_IP6,
                "fe80::2".parse().unwrap(),
            ][usize::from(how >> 2 & 3)];
            let dst = [
                "ff02::2".parse().unwrap(),
                GATEWAY6,
                DNS6,
                "ff02::1:ff00:2".parse().unwrap(),
                "fe80::2".parse().unwrap(),
                "ff02::1".parse().unwrap(),
                GUEST_IP6,
                "2001:db8::1".parse().unwrap(),
            ][usize::from(how >> 4 & 7)];
            let hop = if how & 128 != 0 { 255 } else { input.u8() };
            ip_frame(
                src.into(),
                dst.into(),
                PROTO_ICMPV6,
                hop,
                body,
                how & 1 == 0,
            )
        };
        let Some((v6, message)) = v6_packet(&frame) else {
            continue;
        };
        if let Some(&t) = message.first() {
            let _ = ndp::serves(&plan.services, t);
        }
        out.clear();
        let mac = MacAddr(GUEST_MAC);
        let v = ndp::handle(&plan, how & 2 != 0, mac, &v6, message, &mut out);
        check_answer(&plan, v, &out);
        let _ = ndp::dad_target(&v6, message);
        out.clear();
        if ndp::unreachable(&v6plan, &frame, how & 3, &mut out) {
            check_answer(&plan, Verdict::Reply, &out);
        }
    }
}

/// The TFTP root the fuzzer serves: a few files around the block sizes and a subdirectory,
/// one per user, made (again) once per process with the same contents.
pub(crate) fn tftp_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let root = std::env::temp_dir().join(format!("vnu-fuzz-tftp-{uid}"));
        std::fs::create_dir_all(root.join("dir")).expect("TFTP root for fuzzing");
        let files: [(&str, usize); 6] = [
            ("empty", 0),
            ("small", 10),
            ("block", 512),
            ("big", 3000),
            ("dir/nested", 1428),
            ("large", 70_000),
        ];
        for (name, len) in files {
            let path = root.join(name);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == len as u64) {
                continue;
            }
            let content: Vec<u8> = (0..len).map(|i| i as u8).collect();
            std::fs::write(path, content).expect("TFTP file for fuzzing");
        }
        root
    })
}

/// TFTP: read requests for the root's files with options, acknowledgements, errors and raw
/// messages, from a few clients, with time moving on between them.
pub fn tftp(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut plan = plan(flags & 0xe0);
    if flags & 1 == 0 {
        plan.tftp_root = Some(tftp_root().clone());
    }
    let mut server = tftp::Server::new(&plan);
    let mut ident = Ident::new();
    let mut out = Vec::new();
    let mut now = Instant::now();
    let names: [&[u8]; 8] = [
        b"small",
        b"block",
        b"big",
        b"dir/nested",
        b"large",
        b"empty",
        b"missing",
        b"dir",
    ];
    while !input.is_empty() {
        let how = input.u8();
        now += Duration::from_millis(u64::from(input.u8()) * 50);
        let port = 1024 + u16::from(how >> 5);
        let client = if how & 16 != 0 {
            SocketAddr::new(GUEST_LINK_LOCAL.into(), port)
        } else {
            SocketAddr::new(GUEST_IP.into(), port)
        };
        let server_ip: IpAddr = if client.is_ipv6() {
            GATEWAY6.into()
        } else {
            GATEWAY.into()
        };
        let mut msg = Vec::new();
        match how & 3 {
            0 => {
                // RRQ: a known name or a fuzzed one, a mode, then option pairs.
                msg.extend_from_slice(&1u16.to_be_bytes());
                match input.u8() {
                    n @ 0..=199 => msg.extend_from_slice(names[usize::from(n) % names.len()]),
                    _ => msg.extend_from_slice(input.chunk()),
                }
                msg.push(0);
                msg.extend_from_slice(if how & 4 != 0 { b"octet\0" } else { b"OCTET\0" });
                msg.extend_from_slice(input.chunk());
            }
            1 => {
                // ACK of a block near the start or anywhere.
                msg.extend_from_slice(&4u16.to_be_bytes());
                let block = if how & 4 != 0 {
                    input.u16()
                } else {
                    u16::from(input.u8() & 7)
                };
                msg.extend_from_slice(&block.to_be_bytes());
            }
            2 => {
                msg.extend_from_slice(&5u16.to_be_bytes());
                msg.extend_from_slice(input.chunk());
            }
            _ => msg.extend_from_slice(input.chunk()),
        }
        let mut ex = tftp::Exchange {
            addrs: Addrs::new(client.ip(), server_ip).expect("one family"),
            client_port: client.port(),
            guest_mac: MacAddr(GUEST_MAC),
            gateway_mac: plan.gateway_mac,
            ident: &mut ident,
            now,
        };
        out.clear();
        let v = server.handle(&mut ex, &msg, &mut out);
        check_answer(&plan, v, &out);
        assert!(server.sessions() <= 20);
    }
}
