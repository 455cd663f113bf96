//! Stateless DHCPv6, as slirp serves it (RFC 3736): Information-Request only.
//!
//! # Theory of operation
//!
//! The guest autoconfigures its address from the router advertisement; DHCPv6 only tells it
//! the DNS server. An Information-Request to the gateway or to ff02::1:2, port 547, gets a
//! Reply from the gateway echoing the transaction ID and the client ID, with the DNS address
//! (option 23) and a TFTP boot-file URL (option 59) only if the request's option-request
//! option asks for them. Like slirp, there is no server ID; a request carrying an IA address
//! option is dropped (RFC 3315 says a stateless server must); Solicit and Request, which
//! want addresses, go unanswered. Nothing here keeps state.

use std::net::Ipv6Addr;

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::{IpProtocol, checksum};

use crate::engine::Verdict;
use crate::ip::{self, PacketMeta};
use crate::ndp::Ipv6Header;

pub const SERVER_PORT: u16 = 547;
const ALL_DHCP_AGENTS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const REPLY: u8 = 7;
const INFORMATION_REQUEST: u8 = 11;
const OPTION_CLIENTID: u16 = 1;
const OPTION_IAADDR: u16 = 5;
const OPTION_ORO: u16 = 6;
const OPTION_DNS_SERVERS: u16 = 23;
const OPTION_BOOTFILE_URL: u16 = 59;
/// Longer client IDs are refused, as slirp refuses them.
const MAX_CLIENT_ID: usize = 256;

/// Whether the guest UDP datagram described by `ip` and `dst_port` is for our DHCPv6 server.
pub fn is_request(plan: &NetPlan, ip: &Ipv6Header, dst_port: u16) -> bool {
    plan.ipv6.as_ref().is_some_and(|v6| {
        dst_port == SERVER_PORT && (ip.dst == v6.gateway || ip.dst == ALL_DHCP_AGENTS)
    })
}

/// What an Information-Request asks for.
#[derive(Debug, Default)]
struct Wanted<'a> {
    client_id: Option<&'a [u8]>,
    dns: bool,
    boot_url: bool,
}

fn parse_options(mut opts: &[u8]) -> Option<Wanted<'_>> {
    let mut wanted = Wanted::default();
    while opts.len() > 4 {
        let code = u16::from_be_bytes([opts[0], opts[1]]);
        let len = usize::from(u16::from_be_bytes([opts[2], opts[3]]));
        let body = opts.get(4..4 + len)?;
        match code {
            OPTION_IAADDR => return None,
            OPTION_CLIENTID if len > MAX_CLIENT_ID => return None,
            OPTION_CLIENTID => wanted.client_id = Some(body),
            OPTION_ORO if len % 2 == 1 => return None,
            OPTION_ORO => {
                for pair in body.chunks_exact(2) {
                    match u16::from_be_bytes([pair[0], pair[1]]) {
                        OPTION_DNS_SERVERS => wanted.dns = true,
                        OPTION_BOOTFILE_URL => wanted.boot_url = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        opts = &opts[4 + len..];
    }
    Some(wanted)
}

fn push_option(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Answers a DHCPv6 message (the UDP payload starts at `ip.l4_offset + 8` in `frame`).
pub fn handle(
    plan: &NetPlan,
    guest_mac: MacAddr,
    ip: &Ipv6Header,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    let Some(v6) = &plan.ipv6 else {
        return Verdict::Unhandled;
    };
    let Some(udp) = frame.get(ip.l4_offset..ip.l4_offset + ip.l4_len) else {
        return Verdict::Malformed;
    };
    if udp.len() < 8 + 4 {
        return Verdict::Malformed;
    }
    let client_port = u16::from_be_bytes([udp[0], udp[1]]);
    let msg = &udp[8..];
    if msg[0] != INFORMATION_REQUEST {
        return Verdict::Unhandled;
    }
    let Some(wanted) = parse_options(&msg[4..]) else {
        return Verdict::Malformed;
    };
    let mut body = vec![REPLY, msg[1], msg[2], msg[3]];
    if let Some(id) = wanted.client_id {
        push_option(&mut body, OPTION_CLIENTID, id);
    }
    if wanted.dns {
        push_option(&mut body, OPTION_DNS_SERVERS, &v6.dns.octets());
    }
    if wanted.boot_url
        && let Some(file) = &plan.dhcp.bootfile
    {
        let url = format!("tftp://[{}]/{file}", v6.gateway);
        push_option(&mut body, OPTION_BOOTFILE_URL, url.as_bytes());
    }

    let meta = PacketMeta {
        src_mac: MacAddr::slirp_for_ipv6(v6.gateway),
        dst_mac: guest_mac,
        src: v6.gateway.into(),
        dst: ip.src.into(),
        protocol: IpProtocol::Udp,
        ttl: 255,
        tos: 0,
        ident: 0,
    };
    let udp_len = 8 + body.len();
    out.clear();
    out.resize(ip::l2_l3_len(&meta.dst) + udp_len, 0);
    let off = ip::write_headers(out, &meta, udp_len);
    let udp = &mut out[off..];
    udp[0..2].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&client_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[8..].copy_from_slice(&body);
    let pseudo = ip::pseudo_header_sum(&meta.src, &meta.dst, IpProtocol::Udp, udp_len);
    let sum = !checksum::combine(&[pseudo, checksum::data(udp)]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    Verdict::Reply
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x41, 0x2c, 0x49]);

    fn request(dst: &str, options: &[u8]) -> Vec<u8> {
        let mut msg = vec![INFORMATION_REQUEST, 0xab, 0xcd, 0xef];
        msg.extend_from_slice(options);
        let meta = PacketMeta {
            src_mac: GUEST_MAC,
            dst_mac: MacAddr([0x33, 0x33, 0, 1, 0, 2]),
            src: "fe80::5054:ff:fe41:2c49"
                .parse::<Ipv6Addr>()
                .unwrap()
                .into(),
            dst: dst.parse::<Ipv6Addr>().unwrap().into(),
            protocol: IpProtocol::Udp,
            ttl: 1,
            tos: 0,
            ident: 0,
        };
        let udp_len = 8 + msg.len();
        let mut f = vec![0u8; 54 + udp_len];
        let off = ip::write_headers(&mut f, &meta, udp_len);
        f[off..off + 2].copy_from_slice(&546u16.to_be_bytes());
        f[off + 2..off + 4].copy_from_slice(&SERVER_PORT.to_be_bytes());
        f[off + 4..off + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        f[off + 8..].copy_from_slice(&msg);
        f
    }

    fn answer(plan: &NetPlan, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let ip = Ipv6Header::parse(frame, frame.len()).unwrap();
        assert!(is_request(plan, &ip, SERVER_PORT));
        let mut out = Vec::new();
        (handle(plan, GUEST_MAC, &ip, frame, &mut out), out)
    }

    #[test]
    fn information_request_gets_client_id_and_dns() {
        let plan = NetPlan::slirp_default();
        let mut opts = Vec::new();
        push_option(&mut opts, OPTION_CLIENTID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        push_option(&mut opts, OPTION_ORO, &[0, 23, 0, 24]);
        let (v, reply) = answer(&plan, &request("ff02::1:2", &opts));
        assert_eq!(v, Verdict::Reply);
        let ip = Ipv6Header::parse(&reply, reply.len()).unwrap();
        assert_eq!(ip.src, "fec0::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(&reply[0..6], &GUEST_MAC.0);
        assert_eq!(&reply[6..12], &[0x52, 0x56, 0, 0, 0, 2]);
        let udp = &reply[ip.l4_offset..];
        assert_eq!(&udp[0..4], &[2, 0x23, 2, 0x22], "547 -> 546");
        let pseudo =
            ip::pseudo_header_sum(&ip.src.into(), &ip.dst.into(), IpProtocol::Udp, udp.len());
        assert_eq!(checksum::combine(&[pseudo, checksum::data(udp)]), 0xffff);
        let msg = &udp[8..];
        assert_eq!(&msg[..4], &[REPLY, 0xab, 0xcd, 0xef]);
        let mut expected = Vec::new();
        push_option(
            &mut expected,
            OPTION_CLIENTID,
            &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
        );
        push_option(
            &mut expected,
            OPTION_DNS_SERVERS,
            &"fec0::3".parse::<Ipv6Addr>().unwrap().octets(),
        );
        assert_eq!(&msg[4..], &expected[..], "no server ID, nothing unasked");
    }

    #[test]
    fn requests_with_addresses_or_other_types_are_not_answered() {
        let plan = NetPlan::slirp_default();
        let mut opts = Vec::new();
        push_option(&mut opts, OPTION_IAADDR, &[0; 24]);
        assert_eq!(
            answer(&plan, &request("fec0::2", &opts)).0,
            Verdict::Malformed
        );
        let mut solicit = request("ff02::1:2", &[]);
        let at = solicit.len() - 4;
        solicit[at] = 1; // SOLICIT
        assert_eq!(answer(&plan, &solicit).0, Verdict::Unhandled);
    }

    #[test]
    fn boot_url_only_when_asked_and_configured() {
        let mut plan = NetPlan::slirp_default();
        plan.dhcp.bootfile = Some("pxelinux.0".into());
        let mut opts = Vec::new();
        push_option(&mut opts, OPTION_ORO, &[0, 59]);
        let (_, reply) = answer(&plan, &request("fec0::2", &opts));
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("tftp://[fec0::2]/pxelinux.0"), "{text}");
    }
}
