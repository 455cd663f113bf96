//! IPv4 fragmentation of datagrams from the host larger than the guest's MTU allows.
//!
//! slirp's `ip_output` fragments what is too large for the MTU; the UDP table does the same
//! for an IPv4 guest. The first fragment goes out in the frame the datagram was read into,
//! the others from the bounce buffer that took the rest. Kept apart from the table: it is IPv4
//! framing, not flow state.

use std::net::SocketAddr;

use smoltcp::wire::IpProtocol;

use super::{UDP_HEADER_LEN, checksum_field, write_ports_and_len};
use crate::link::{RxLink, RxSlot};
use crate::nat::Ctx;
use crate::wire::ip;

/// The bytes of the UDP datagram (header included) every IPv4 fragment but the last carries:
/// the MTU's IP payload, rounded down to the 8-byte units fragment offsets count in.
fn fragment_unit(mtu: u16) -> usize {
    usize::from(mtu).saturating_sub(crate::wire::ipv4::HEADER_LEN) & !7
}

/// Marks the IPv4 header at `frame[14..34]` as the fragment at byte `offset` of its datagram,
/// more to come or not, and checksums it again.
fn set_fragment(frame: &mut [u8], offset: usize, more: bool) {
    let ip = &mut frame[crate::wire::ethernet::HEADER_LEN..][..crate::wire::ipv4::HEADER_LEN];
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(ip);
    ip.set_more_frags(more);
    ip.set_frag_offset(offset as u16);
    ip.fill_checksum();
}

/// Sends the first IPv4 fragment of a datagram of `len` payload bytes (`len` above the MTU's
/// room) from `src` to the guest at `dst`: the frame's payload region of `slot` holds the
/// datagram's first bytes, `bounce` the rest from the frame's capacity on. The bytes of the
/// frame past the first fragment's share are copied back into `bounce`, so that it holds
/// everything after that share. Returns the framing the other fragments repeat (its ident),
/// or `None` when an MTU this small leaves no room to fragment (the datagram is dropped).
pub(super) fn first_fragment<S: RxSlot>(
    mut slot: S,
    bounce: &mut [u8],
    ctx: &mut Ctx<'_>,
    src: SocketAddr,
    dst: SocketAddr,
    len: usize,
) -> Option<ip::PacketMeta> {
    let unit = fragment_unit(ctx.mtu);
    let max = ctx.max_payload(&dst.ip(), UDP_HEADER_LEN);
    if unit <= UDP_HEADER_LEN || len <= max {
        return None;
    }
    let header_len = ip::l2_l3_len(&dst.ip()) + UDP_HEADER_LEN;
    let first = unit - UDP_HEADER_LEN;
    slot.read_at(header_len + first, &mut bounce[first..max]);
    let meta = ctx.meta(src.ip(), dst.ip(), IpProtocol::Udp);
    let l4_len = UDP_HEADER_LEN + len;
    let mut hdr = [0u8; 14 + 20 + UDP_HEADER_LEN];
    let off = ip::write_headers(&mut hdr, &meta, unit);
    set_fragment(&mut hdr, 0, true);
    let udp = &mut hdr[off..];
    write_ports_and_len(udp, src, dst, l4_len);
    // The guest checks the sum over the reassembled datagram: all of it, always (a
    // checksum-verified mark would cover only the first fragment).
    let pseudo = ip::pseudo_header_sum(&meta.src(), &meta.dst(), IpProtocol::Udp, l4_len);
    let sum = checksum_field(&[
        pseudo,
        smoltcp::wire::checksum::data(udp),
        slot.sum_at(header_len, first),
        smoltcp::wire::checksum::data(&bounce[first..len]),
    ]);
    udp[6..8].copy_from_slice(&sum);
    slot.write_at(0, &hdr);
    slot.commit(header_len + first);
    Some(meta)
}

/// Sends the fragments after the first of a datagram of `len` payload bytes whose bytes past
/// the first fragment are in `bounce` (see [`first_fragment`]); false when the guest ran out
/// of buffers on the way (it then drops the fragments it has when its reassembly times out).
pub(super) fn other_fragments<L: RxLink>(
    rx: &mut L,
    bounce: &[u8],
    meta: &ip::PacketMeta,
    mtu: u16,
    len: usize,
) -> bool {
    let unit = fragment_unit(mtu);
    let l4_len = UDP_HEADER_LEN + len;
    let mut offset = unit;
    while offset < l4_len {
        let chunk = unit.min(l4_len - offset);
        let mut hdr = [0u8; 14 + 20];
        let off = ip::write_headers(&mut hdr, meta, chunk);
        set_fragment(&mut hdr, offset, offset + chunk < l4_len);
        let at = offset - UDP_HEADER_LEN;
        if rx.send(&[&hdr[..off], &bounce[at..at + chunk]]).is_err() {
            return false;
        }
        offset += chunk;
    }
    true
}
