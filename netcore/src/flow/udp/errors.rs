//! ICMP errors the host reports about the guest's datagrams, relayed to the guest.
//!
//! Each flow's socket has `IP_RECVERR`/`IPV6_RECVERR` set, so an ICMP error about what the
//! guest sent through it waits on the socket's error queue (`EPOLLERR`). Kept apart from the
//! datagram paths because it speaks another protocol: it rebuilds the guest's datagram and
//! hands it to the ICMP and ICMPv6 error builders of [`crate::service`].

use std::net::SocketAddr;

use netplan::NetPlan;
use smoltcp::wire::IpProtocol;

use super::{UDP_HEADER_LEN, UdpTable, checksum_field, seen_from, write_ports_and_len};
use crate::link::RxLink;
use crate::nat::{Ctx, Upstream};
use crate::sys;
use crate::wire::ip;

/// Payload bytes of the offending datagram an ICMP error relayed to the guest quotes, at most
/// (slirp quotes up to 548 bytes of packet).
const QUOTED_PAYLOAD: usize = 512;
/// Errors taken off a socket's error queue per event, at most: enough to empty it (queued
/// errors count against the socket's receive buffer, so a queue left full would keep data
/// out, and no new event would come for it). The bound only guards against a flood that
/// refills it as fast as it drains.
const MAX_ERRORS_PER_EVENT: usize = 4096;

impl UdpTable {
    /// Relays the ICMP errors queued on flow `slot`'s socket (`IP_RECVERR`) to the guest as
    /// errors about the datagram it sent, rebuilt from what the queue gives back (passt's
    /// `udp_sock_recverr`; slirp sends port unreachable for the errors its reads see).
    pub(super) fn relay_errors<L: RxLink>(
        &mut self,
        slot: usize,
        plan: &NetPlan,
        upstream: &Upstream,
        ctx: &mut Ctx<'_>,
        rx: &mut L,
    ) {
        let Some(flow) = self.flows.get(slot) else {
            return;
        };
        let mut quoted = [0u8; QUOTED_PAYLOAD];
        let mut frame = Vec::new();
        let mut out = Vec::new();
        for _ in 0..MAX_ERRORS_PER_EVENT {
            let Ok(err) = sys::recv_error(&flow.sock, &mut quoted) else {
                return;
            };
            let Some((icmp_type, code, rest)) = guest_error(&err, flow.guest.is_ipv4()) else {
                continue;
            };
            let Some(dest) = err.dest else { continue };
            let Some(dest) = seen_from(plan, upstream, dest, flow.guest) else {
                continue;
            };
            quoted_datagram(
                ctx,
                flow.guest,
                dest,
                &quoted[..err.payload_len],
                &mut frame,
            );
            let built = match flow.guest {
                SocketAddr::V4(_) => crate::service::icmp::error(
                    plan, ctx.ident, &frame, icmp_type, code, rest, &mut out,
                ),
                SocketAddr::V6(_) => plan.ipv6.as_ref().is_some_and(|v6| {
                    crate::service::ndp::error(v6, &frame, icmp_type, code, rest, &mut out)
                }),
            };
            if built && rx.send(&[&out]).is_ok() {
                self.counters.icmp_relayed += 1;
            }
        }
    }
}

/// The ICMP message (type, code, second header word) that tells the guest of `err`, for the
/// errors that concern it: unreachable, time exceeded, and fragmentation needed or packet
/// too big with the MTU. Local errors (our own socket's) are not the guest's business.
fn guest_error(err: &sys::SockError, ipv4: bool) -> Option<(u8, u8, [u8; 4])> {
    use crate::service::{icmp, ndp};
    let mtu = u16::try_from(err.info).unwrap_or(u16::MAX);
    match (ipv4, err.origin, err.icmp_type) {
        (true, libc::SO_EE_ORIGIN_ICMP, icmp::DEST_UNREACHABLE) => {
            let rest = if err.icmp_code == icmp::UNREACH_NEEDFRAG {
                let [hi, lo] = mtu.to_be_bytes();
                [0, 0, hi, lo]
            } else {
                [0; 4]
            };
            Some((icmp::DEST_UNREACHABLE, err.icmp_code, rest))
        }
        (true, libc::SO_EE_ORIGIN_ICMP, icmp::TIME_EXCEEDED) => {
            Some((icmp::TIME_EXCEEDED, err.icmp_code, [0; 4]))
        }
        (false, libc::SO_EE_ORIGIN_ICMP6, t @ (ndp::DEST_UNREACHABLE | ndp::TIME_EXCEEDED)) => {
            Some((t, err.icmp_code, [0; 4]))
        }
        (false, libc::SO_EE_ORIGIN_ICMP6, ndp::PACKET_TOO_BIG) => {
            Some((ndp::PACKET_TOO_BIG, 0, err.info.to_be_bytes()))
        }
        _ => None,
    }
}

/// The datagram the guest at `guest` sent to `dest` (as it addressed it), rebuilt as a frame
/// from the guest for the ICMP builders to quote: headers and what is known of the payload.
fn quoted_datagram(
    ctx: &Ctx<'_>,
    guest: SocketAddr,
    dest: SocketAddr,
    payload: &[u8],
    frame: &mut Vec<u8>,
) {
    frame.clear();
    let Some(addrs) = ip::Addrs::new(guest.ip(), dest.ip()) else {
        return;
    };
    let meta = ip::PacketMeta {
        src_mac: ctx.guest_mac,
        dst_mac: ctx.gateway_mac,
        addrs,
        protocol: IpProtocol::Udp,
        ttl: 64,
        tos: 0,
        ident: 0,
    };
    let l4_len = UDP_HEADER_LEN + payload.len();
    frame.clear();
    frame.resize(ip::l2_l3_len(&guest.ip()) + l4_len, 0);
    let off = ip::write_headers(frame, &meta, l4_len);
    let udp = &mut frame[off..];
    write_ports_and_len(udp, guest, dest, l4_len);
    udp[UDP_HEADER_LEN..].copy_from_slice(payload);
    // IPv6 has no checksum-less UDP: the sum the guest sent, if the payload came back whole.
    if guest.is_ipv6() {
        let pseudo = ip::pseudo_header_sum(&guest.ip(), &dest.ip(), IpProtocol::Udp, l4_len);
        let sum = checksum_field(&[pseudo, smoltcp::wire::checksum::data(udp)]);
        udp[6..8].copy_from_slice(&sum);
    }
}
