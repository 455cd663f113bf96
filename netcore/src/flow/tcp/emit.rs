//! Segments toward the guest: the TCP header and the frame around it.

use super::*;

/// One TCP header toward the guest.
#[derive(Debug)]
pub(super) struct Header {
    pub(super) key: FlowKey,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    pub(super) options: Options,
}

impl Header {
    /// A header for `flow` with its current ACK number and window (which may measure the
    /// socket, and keeps the measurement as the flow's estimate).
    pub(super) fn of(flow: &mut Flow, seq: u32, tcp_flags: u8) -> Header {
        let window = if tcp_flags & flags::RST != 0 {
            0
        } else if tcp_flags & flags::SYN != 0 {
            // The window in a SYN is never scaled.
            send_space(flow.sock.as_fd(), flow.largest_segment)
                .1
                .min(65535) as u16
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
            options: Options::default(),
        }
    }

    /// The TCP header's length, options included.
    fn tcp_len(&self) -> usize {
        TCP_HEADER_LEN + self.options.len()
    }

    /// The frame's length up to the payload.
    pub(super) fn len(&self) -> usize {
        ip::l2_l3_len(&self.key.guest.ip()) + self.tcp_len()
    }
}

/// The options we send: only in our SYN or SYN-ACK, our MSS and perhaps our window scale
/// (after a NOP, so that the header stays a multiple of four bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub(super) mss: Option<u16>,
    pub(super) wscale: Option<u8>,
}

impl Options {
    fn list(&self) -> impl Iterator<Item = TcpOption<'static>> {
        let mss = self.mss.map(TcpOption::MaxSegmentSize);
        let wscale = self
            .wscale
            .into_iter()
            .flat_map(|shift| [TcpOption::NoOperation, TcpOption::WindowScale(shift)]);
        mss.into_iter().chain(wscale)
    }

    pub(super) fn len(&self) -> usize {
        self.list().map(|option| option.buffer_len()).sum()
    }

    fn emit(&self, mut buf: &mut [u8]) {
        for option in self.list() {
            buf = option.emit(buf);
        }
    }
}

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

/// The most bytes of headers in front of a segment's payload: Ethernet, IPv6 (the larger IP
/// header), and the largest TCP header.
const MAX_HEADERS: usize = crate::wire::ethernet::HEADER_LEN + 40 + 60;

/// Writes Ethernet, IP and TCP headers in front of `payload_len` bytes already in the slot,
/// with as much of the TCP checksum as `csum` says.
pub(super) fn write_segment<S: RxBytes>(
    slot: &mut S,
    ctx: &mut Ctx<'_>,
    h: &Header,
    payload_len: usize,
    csum: Checksum,
) {
    let meta = ctx.meta(h.key.remote.ip(), h.key.guest.ip(), IpProtocol::Tcp);
    let tcp_len = h.tcp_len();
    let l4_len = tcp_len + payload_len;
    let mut hdr = [0u8; MAX_HEADERS];
    let off = ip::write_headers(&mut hdr, &meta, l4_len);
    let end = off + tcp_len;
    let mut tcp = TcpPacket::new_unchecked(&mut hdr[off..end]);
    tcp.set_src_port(h.key.remote.port());
    tcp.set_dst_port(h.key.guest.port());
    tcp.set_seq_number(TcpSeqNumber(h.seq as i32));
    tcp.set_ack_number(TcpSeqNumber(h.ack as i32));
    tcp.set_header_len(tcp_len as u8);
    tcp.set_fin(h.flags & flags::FIN != 0);
    tcp.set_syn(h.flags & flags::SYN != 0);
    tcp.set_rst(h.flags & flags::RST != 0);
    tcp.set_psh(h.flags & flags::PSH != 0);
    tcp.set_ack(h.flags & flags::ACK != 0);
    tcp.set_window_len(h.window);
    h.options.emit(tcp.options_mut());
    let pseudo = ip::pseudo_header_sum(&meta.src(), &meta.dst(), IpProtocol::Tcp, l4_len);
    let sum = match csum {
        Checksum::Skip => 0,
        Checksum::PseudoOnly => pseudo,
        Checksum::Full => {
            // Over the header as written so far, its checksum field still zero.
            let header_sum = smoltcp::wire::checksum::data(&hdr[off..end]);
            let payload_sum = if payload_len > 0 {
                slot.sum_at(end, payload_len)
            } else {
                0
            };
            !smoltcp::wire::checksum::combine(&[pseudo, header_sum, payload_sum])
        }
    };
    TcpPacket::new_unchecked(&mut hdr[off..end]).set_checksum(sum);
    slot.write_at(0, &hdr[..end]);
}

/// Sends a segment without payload; false if the guest has no RX buffer for it.
pub(super) fn send_flags<L: RxLink>(
    flow: &mut Flow,
    ctx: &mut Ctx<'_>,
    rx: &mut L,
    tcp_flags: u8,
    seq: u32,
) -> bool {
    send_header(ctx, rx, &Header::of(flow, seq, tcp_flags))
}

pub(super) fn send_header<L: RxLink>(ctx: &mut Ctx<'_>, rx: &mut L, h: &Header) -> bool {
    let len = h.len();
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
    let mss = ctx
        .max_payload(&flow.key.guest.ip(), TCP_HEADER_LEN)
        .min(65535) as u16;
    let mut header = Header::of(flow, flow.iss, tcp_flags);
    header.options = Options {
        mss: Some(mss),
        wscale: scale.then_some(OUR_WSCALE),
    };
    // If the guest has no buffer the retransmission timer tries again.
    send_header(ctx, rx, &header);
    flow.snd_nxt = flow.iss.wrapping_add(1);
}

/// An RST answering a segment that belongs to no connection (RFC 9293 reset generation).
pub(super) fn send_reset_for<L: RxLink>(ctx: &mut Ctx<'_>, seg: &Segment, rx: &mut L) {
    let key = FlowKey {
        guest: seg.guest,
        remote: seg.remote,
    };
    // RFC 9293 3.10.7.1: an RST at the ACK number when there is one; else an RST|ACK of
    // everything the segment took.
    let (seq, tcp_flags, rcv_nxt) = if seg.has(flags::ACK) {
        (seg.ack, flags::RST, 0)
    } else {
        let len = seq::segment_space(seg.payload_len, seg.has(flags::SYN), seg.has(flags::FIN));
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
            options: Options::default(),
        },
    );
}
