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
//! want addresses, go unanswered. The engine hands [`handle`] the datagram as the IPv6 payload
//! carries it: unlike DHCPv4 and TFTP, its UDP length and checksum are not checked (slirp's
//! `udp6_input` checks the checksum; making this path do so would change what is answered).
//! Options are read through a bounds-checked `Frame` and written by hand, in slirp's order.
//! Nothing here keeps state.

use std::net::Ipv6Addr;

use netplan::{MacAddr, NetPlan};
use smoltcp::wire::IpProtocol;

use super::Verdict;
use crate::wire::frame::Frame;
use crate::wire::ip::{self, Addrs, PacketMeta};
use crate::wire::{ipv6, udp};

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

/// Whether a guest UDP datagram to `dst`:`dst_port` is for our DHCPv6 server.
pub fn is_request(plan: &NetPlan, dst: Ipv6Addr, dst_port: u16) -> bool {
    plan.ipv6
        .as_ref()
        .is_some_and(|v6| dst_port == SERVER_PORT && (dst == v6.gateway || dst == ALL_DHCP_AGENTS))
}

/// What an Information-Request asks for.
#[derive(Debug, Default)]
struct Wanted<'a> {
    client_id: Option<&'a [u8]>,
    dns: bool,
    boot_url: bool,
}

fn parse_options(opts: &[u8]) -> Option<Wanted<'_>> {
    let mut wanted = Wanted::default();
    let mut opts = Frame::new(opts);
    while opts.len() > 4 {
        let code = opts.u16(0)?;
        let len = usize::from(opts.u16(2)?);
        let body = opts.get(4, len)?;
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
        opts = opts.from(4 + len)?;
    }
    Some(wanted)
}

fn push_option(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Answers a DHCPv6 message, `request` (unchecked, see the module's doc) from the guest at
/// `src`; the answer frame goes into `out`.
pub fn handle(
    plan: &NetPlan,
    guest_mac: MacAddr,
    src: Ipv6Addr,
    request: &udp::Datagram<'_>,
    out: &mut Vec<u8>,
) -> Verdict {
    let Some(v6) = &plan.ipv6 else {
        return Verdict::Unhandled;
    };
    let msg = request.payload;
    if msg.len() < 4 {
        return Verdict::Malformed;
    }
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
        addrs: Addrs::V6 {
            src: v6.gateway,
            dst: src,
        },
        protocol: IpProtocol::Udp,
        ttl: ipv6::HOP_LIMIT,
        tos: 0,
        ident: 0,
    };
    let udp_len = udp::HEADER_LEN + body.len();
    out.clear();
    out.resize(ip::l2_l3_len(&meta.dst()) + udp_len, 0);
    let off = ip::write_headers(out, &meta, udp_len);
    let datagram = &mut out[off..];
    datagram[udp::HEADER_LEN..].copy_from_slice(&body);
    udp::write_header(datagram, &meta.addrs, SERVER_PORT, request.src_port);
    Verdict::Reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::{GuestHeader, GuestPacket};
    use smoltcp::wire::checksum;

    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x41, 0x2c, 0x49]);

    fn request(dst: &str, options: &[u8]) -> Vec<u8> {
        let mut msg = vec![INFORMATION_REQUEST, 0xab, 0xcd, 0xef];
        msg.extend_from_slice(options);
        let meta = PacketMeta {
            src_mac: GUEST_MAC,
            dst_mac: MacAddr([0x33, 0x33, 0, 1, 0, 2]),
            addrs: Addrs::V6 {
                src: "fe80::5054:ff:fe41:2c49".parse().unwrap(),
                dst: dst.parse().unwrap(),
            },
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
        let ip = GuestPacket::ipv6(frame, frame.len()).unwrap();
        let GuestHeader::V6(v6) = ip.header else {
            panic!("IPv6")
        };
        assert!(is_request(plan, v6.dst, SERVER_PORT));
        let request = udp::Datagram::unchecked(ip.payload(frame).unwrap()).unwrap();
        let mut out = Vec::new();
        (handle(plan, GUEST_MAC, v6.src, &request, &mut out), out)
    }

    #[test]
    fn information_request_gets_client_id_and_dns() {
        let plan = NetPlan::slirp_default();
        let mut opts = Vec::new();
        push_option(&mut opts, OPTION_CLIENTID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        push_option(&mut opts, OPTION_ORO, &[0, 23, 0, 24]);
        let (v, reply) = answer(&plan, &request("ff02::1:2", &opts));
        assert_eq!(v, Verdict::Reply);
        let ip = GuestPacket::ipv6(&reply, reply.len()).unwrap();
        assert_eq!(ip.src(), "fec0::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(&reply[0..6], &GUEST_MAC.0);
        assert_eq!(&reply[6..12], &[0x52, 0x56, 0, 0, 0, 2]);
        let udp = &reply[ip.l4_offset..];
        assert_eq!(&udp[0..4], &[2, 0x23, 2, 0x22], "547 -> 546");
        let pseudo = ip.addrs().pseudo_header_sum(IpProtocol::Udp, udp.len());
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

    /// A reply whose checksum computes to zero carries all ones: zero is invalid over IPv6
    /// and the guest would drop it.
    #[test]
    fn a_zero_checksum_goes_out_as_all_ones() {
        let plan = NetPlan::slirp_default();
        let checksum_of = |frame: &[u8]| u16::from_be_bytes([frame[60], frame[61]]);
        let mut req = request("ff02::1:2", &[]);
        // The last two bytes of the transaction ID are one 16-bit word of the reply: set to
        // the checksum the reply has with them zero, they bring its sum to zero.
        req[64..66].fill(0);
        let (_, reply) = answer(&plan, &req);
        let c0 = checksum_of(&reply);
        req[64..66].copy_from_slice(&c0.to_be_bytes());
        let (v, reply) = answer(&plan, &req);
        assert_eq!(v, Verdict::Reply);
        assert_eq!(checksum_of(&reply), 0xffff);
        let ip = GuestPacket::ipv6(&reply, reply.len()).unwrap();
        assert!(udp::parse(&ip.addrs(), ip.payload(&reply).unwrap()).is_some());
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
