//! Segments toward the guest: the TCP header and the frame around it.

use super::*;

/// One TCP header toward the guest.
#[derive(Debug)]
pub(super) struct Header<'o> {
    pub(super) key: FlowKey,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    pub(super) options: &'o [u8],
}

impl Header<'_> {
    /// A header for `flow` with its current ACK number and window.
    pub(super) fn of(flow: &Flow, seq: u32, tcp_flags: u8) -> Header<'static> {
        let window = if tcp_flags & flags::RST != 0 {
            0
        } else if tcp_flags & flags::SYN != 0 {
            // The window in a SYN is never scaled.
            send_space(flow.fd(), flow.largest_segment).1.min(65535) as u16
        } else {
            flow.window_field()
        };
        Header {
            key: flow.key,
            seq,
            ack: if tcp_flags & flags::ACK != 0 {
                flow.rcv_nxt
            } else {
                0
            },
            flags: tcp_flags,
            window,
            options: &[],
        }
    }

    pub(super) fn len(&self, key_ip: &IpAddr) -> usize {
        ip::l2_l3_len(key_ip) + TCP_HEADER_LEN + self.options.len()
    }
}

/// Writes Ethernet, IP and TCP headers in front of `payload_len` bytes already in the slot,
/// with checksums.
/// How much of a segment's TCP checksum we compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checksum {
    /// All of it, over the payload read back from the slot.
    Full,
    /// None: the frame is marked valid for the guest (`GUEST_CSUM`).
    Skip,
    /// The pseudo-header sum only, as segmentation offload expects (`NEEDS_CSUM`).
    PseudoOnly,
}

/// Whether TCP segments for `key` may be larger than the MTU.
pub(super) fn tso(offloads: RxOffloads, key: &FlowKey) -> bool {
    if key.guest.is_ipv6() {
        offloads.tso6
    } else {
        offloads.tso4
    }
}

pub(super) fn write_segment<S: RxBytes>(
    slot: &mut S,
    ctx: &mut Ctx<'_>,
    h: &Header<'_>,
    payload_len: usize,
    csum: Checksum,
) {
    let meta = ctx.meta(h.key.remote.ip(), h.key.guest.ip(), IpProtocol::Tcp);
    let tcp_len = TCP_HEADER_LEN + h.options.len();
    let l4_len = tcp_len + payload_len;
    let mut hdr = [0u8; 14 + 40 + 60];
    let off = ip::write_headers(&mut hdr, &meta, l4_len);
    let tcp = &mut hdr[off..off + tcp_len];
    tcp[0..2].copy_from_slice(&h.key.remote.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&h.key.guest.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&h.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&h.ack.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    tcp[13] = h.flags;
    tcp[14..16].copy_from_slice(&h.window.to_be_bytes());
    tcp[20..].copy_from_slice(h.options);
    let pseudo = ip::pseudo_header_sum(&meta.src, &meta.dst, IpProtocol::Tcp, l4_len);
    let sum = match csum {
        Checksum::Skip => 0,
        Checksum::PseudoOnly => pseudo,
        Checksum::Full => {
            let header_sum = smoltcp::wire::checksum::data(tcp);
            let payload_sum = if payload_len > 0 {
                ip::slot_sum(slot, off + tcp_len, payload_len)
            } else {
                0
            };
            !smoltcp::wire::checksum::combine(&[pseudo, header_sum, payload_sum])
        }
    };
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    slot.write_at(0, &hdr[..off + tcp_len]);
}

/// Sends a segment without payload; false if the guest has no RX buffer for it.
pub(super) fn send_flags<L: RxLink>(
    flow: &Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    tcp_flags: u8,
    seq: u32,
) -> bool {
    send_header(ctx, rx, &Header::of(flow, seq, tcp_flags))
}

pub(super) fn send_header<L: RxLink>(ctx: &mut Ctx<'_>, rx: &mut L, h: &Header<'_>) -> bool {
    let len = h.len(&h.key.guest.ip());
    let Some(mut slot) = rx.reserve(len) else {
        return false;
    };
    write_segment(&mut slot, ctx, h, 0, Checksum::Full);
    slot.commit(len);
    true
}

pub(super) fn send_syn_ack<L: RxLink>(flow: &mut Flow, ctx: &mut Ctx<'_>, rx: &mut L) {
    let scale = flow.wscale.is_some();
    send_opening(flow, ctx, rx, flags::SYN | flags::ACK, scale);
}

/// The SYN of a forwarded connection, offering window scaling: the guest's SYN-ACK says
/// whether it is used.
pub(super) fn send_syn<L: RxLink>(flow: &mut Flow, ctx: &mut Ctx<'_>, rx: &mut L) {
    send_opening(flow, ctx, rx, flags::SYN, true);
}

/// Our SYN or SYN-ACK, with our MSS (from the MTU) and, if `scale`, our window scale.
pub(super) fn send_opening<L: RxLink>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    tcp_flags: u8,
    scale: bool,
) {
    let mut options = [0u8; SYN_OPTIONS_LEN];
    let mss = ctx
        .max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN)
        .min(65535) as u16;
    options[0] = 2;
    options[1] = 4;
    options[2..4].copy_from_slice(&mss.to_be_bytes());
    let options_len = if scale {
        options[4] = 1; // NOP
        options[5] = 3;
        options[6] = 3;
        options[7] = OUR_WSCALE;
        8
    } else {
        4
    };
    let mut header = Header::of(flow, flow.iss, tcp_flags);
    header.options = &options[..options_len];
    // If the guest has no buffer the retransmission timer tries again.
    send_header(ctx, rx, &header);
    flow.snd_nxt = flow.iss.wrapping_add(1);
}

pub(super) fn send_reset_for<L: RxLink>(ctx: &mut Ctx<'_>, seg: &Segment, rx: &mut L) {
    let key = FlowKey {
        guest: seg.guest,
        remote: seg.remote,
    };
    let mut len = seg.payload_len as u32;
    if seg.has(flags::SYN) {
        len += 1;
    }
    if seg.has(flags::FIN) {
        len += 1;
    }
    let (seq, tcp_flags, rcv_nxt) = if seg.has(flags::ACK) {
        (seg.ack, flags::RST, 0)
    } else {
        (0, flags::RST | flags::ACK, seg.seq.wrapping_add(len))
    };
    send_header(
        ctx,
        rx,
        &Header {
            key,
            seq,
            ack: rcv_nxt,
            flags: tcp_flags,
            window: 0,
            options: &[],
        },
    );
}
