//! Sequence and window arithmetic, as pure functions of the numbers a flow keeps.
//!
//! Sequence numbers wrap at 2^32: every comparison here is a wrapping difference, as RFC 9293
//! compares them. Our SYN and FIN each take one sequence number that carries no data, so the
//! peek offset (which counts data bytes) differs from `snd_nxt - snd_una` while either is in
//! flight.

/// Data bytes sent but not acknowledged, between `snd_una` and `snd_nxt`: not our SYN (in
/// flight while `snd_una` is still `iss`) nor our FIN (sent at `fin`, the last number).
pub(super) fn data_in_flight(iss: u32, snd_una: u32, snd_nxt: u32, fin: Option<u32>) -> u32 {
    let mut n = snd_nxt.wrapping_sub(snd_una);
    if snd_una == iss && n > 0 {
        n -= 1; // our SYN
    }
    if let Some(fin) = fin
        && n > 0
        && snd_nxt == fin.wrapping_add(1)
    {
        n -= 1; // our FIN
    }
    n
}

/// Whether the guest has acknowledged our FIN, sent at `fin`.
pub(super) fn fin_acked(snd_una: u32, fin: Option<u32>) -> bool {
    fin.is_some_and(|fin| snd_una == fin.wrapping_add(1))
}

/// Whether sequence number `a` comes before `b`.
pub(super) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What an ACK number says about what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// It acknowledges `n` more sequence numbers (SYN and FIN included), within what we sent.
    New(u32),
    /// It acknowledges nothing new: at `snd_una` (a duplicate, if nothing else changed).
    Same,
    /// Before `snd_una` or past `snd_nxt`: it moves nothing.
    Outside,
}

/// Classifies ACK number `ack` against `snd_una` and `snd_nxt`.
pub(super) fn ack(snd_una: u32, snd_nxt: u32, ack: u32) -> Ack {
    let acked = ack.wrapping_sub(snd_una);
    if acked == 0 {
        Ack::Same
    } else if acked <= snd_nxt.wrapping_sub(snd_una) {
        Ack::New(acked)
    } else {
        Ack::Outside
    }
}

/// The data bytes among `acked` newly acknowledged sequence numbers from `snd_una` to `ack`:
/// our SYN (when `snd_una` is `iss`) and our FIN (when `ack` is just past it) are not data.
pub(super) fn acked_data(iss: u32, snd_una: u32, ack: u32, acked: u32, fin: Option<u32>) -> u32 {
    let mut data = acked;
    if snd_una == iss {
        data -= 1; // our SYN
    }
    if fin.is_some_and(|fin| ack == fin.wrapping_add(1)) {
        data -= 1; // our FIN
    }
    data
}

/// How many of `len` bytes at `seq` come before `rcv_nxt`, which we already took (a resent
/// segment, a window probe, a keepalive). None when the segment starts at or after `rcv_nxt`
/// (a gap, if after).
pub(super) fn already_taken(rcv_nxt: u32, seq: u32, len: usize) -> Option<usize> {
    let behind = rcv_nxt.wrapping_sub(seq) as i32;
    (behind > 0).then(|| (behind as usize).min(len))
}

/// The sequence space a segment takes: its payload, plus one each for SYN and FIN.
pub(super) fn segment_space(payload_len: usize, syn: bool, fin: bool) -> u32 {
    payload_len as u32 + u32::from(syn) + u32::from(fin)
}

/// The window field that offers `free` bytes at window scale `shift` (at most 65535 units).
pub(super) fn window_field(free: u32, shift: u8) -> u16 {
    (free >> shift).min(65535) as u16
}

/// The bytes a window field offers at window scale `shift`.
pub(super) fn window_bytes(field: u16, shift: u8) -> u32 {
    u32::from(field) << shift
}

/// The send-buffer space we may offer, and what of it is free, as last measured minus what
/// we wrote since (see `Flow::window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Estimate {
    pub(super) limit: u32,
    pub(super) free: u32,
}

impl Estimate {
    /// The estimate after writing `n` bytes: smaller by as much, or none once less than half
    /// the limit is left (then the socket is measured again).
    pub(super) fn after_write(self, n: usize) -> Option<Estimate> {
        let free = self
            .free
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        (free >= self.limit / 2).then_some(Estimate {
            limit: self.limit,
            free,
        })
    }
}

/// What the kernel charges a TCP send queue for each buffer besides its payload, with some
/// margin: on Linux 6.x writes of 100, 1460, 4096 and 65536 bytes that each became their own
/// buffer cost about 830 bytes more than their payload.
const BUFFER_OVERHEAD: u64 = 1024;

/// The most payload counted per kernel buffer: one large write may become several buffers (the
/// kernel first tops up the last unsent buffer, and bounds a buffer by half the peer's window).
const BUFFER_PAYLOAD: u32 = 16 << 10;

/// The payload that `budget` bytes of send-buffer memory, of which `queued` are used, take
/// from a guest that sends segments of `segment` bytes: the room we may offer, and what is
/// free of it now.
///
/// The kernel's budget counts memory, not payload: each segment the guest sends is written as
/// it comes and may become a buffer of its own, charged its payload plus [`BUFFER_OVERHEAD`].
/// Offering the guest only the payload that fits means what it sends into the window is what
/// the socket takes: a short write makes the guest resend everything after it.
pub(super) fn payload_space(budget: usize, queued: usize, segment: u32) -> (u32, u32) {
    let segment = u64::from(segment.clamp(1, BUFFER_PAYLOAD));
    let payload = |bytes: usize| {
        let bytes = bytes as u64 * segment / (segment + BUFFER_OVERHEAD);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    };
    (payload(budget), payload(budget.saturating_sub(queued)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: u32 = u32::MAX - 1; // the SYN's number, right before the wrap

    #[test]
    fn data_in_flight_leaves_out_our_syn_and_fin_across_the_wrap() {
        // SYN-ACK sent: only the SYN is out.
        assert_eq!(data_in_flight(ISS, ISS, ISS.wrapping_add(1), None), 0);
        // SYN and 10 data bytes out, numbers wrapping past zero.
        assert_eq!(data_in_flight(ISS, ISS, ISS.wrapping_add(11), None), 10);
        // SYN acknowledged, 10 bytes and the FIN out.
        let una = ISS.wrapping_add(1);
        let fin = una.wrapping_add(10);
        assert_eq!(data_in_flight(ISS, una, fin.wrapping_add(1), Some(fin)), 10);
        // Retransmission rewound snd_nxt before the FIN: it is not counted.
        assert_eq!(data_in_flight(ISS, una, una.wrapping_add(4), Some(fin)), 4);
        // Only the FIN is left.
        assert_eq!(data_in_flight(ISS, fin, fin.wrapping_add(1), Some(fin)), 0);
        assert_eq!(data_in_flight(ISS, una, una, None), 0);
    }

    #[test]
    fn fin_acked_only_past_our_fin() {
        assert!(!fin_acked(7, None));
        assert!(!fin_acked(7, Some(7)));
        assert!(fin_acked(8, Some(7)));
        assert!(fin_acked(0, Some(u32::MAX)));
    }

    #[test]
    fn acks_are_new_same_or_outside() {
        let una = u32::MAX - 5;
        let nxt = una.wrapping_add(100);
        assert_eq!(ack(una, nxt, una), Ack::Same);
        assert_eq!(ack(una, nxt, una.wrapping_add(1)), Ack::New(1));
        assert_eq!(ack(una, nxt, nxt), Ack::New(100));
        assert_eq!(ack(una, nxt, nxt.wrapping_add(1)), Ack::Outside);
        assert_eq!(ack(una, nxt, una.wrapping_sub(1)), Ack::Outside);
        // Nothing outstanding: only snd_una itself is meaningful.
        assert_eq!(ack(una, una, una.wrapping_add(1)), Ack::Outside);
    }

    #[test]
    fn acked_data_counts_neither_syn_nor_fin() {
        // The guest acknowledges our SYN and 5 bytes at once.
        assert_eq!(acked_data(ISS, ISS, ISS.wrapping_add(6), 6, None), 5);
        // Past the SYN: all data.
        let una = ISS.wrapping_add(1);
        assert_eq!(acked_data(ISS, una, una.wrapping_add(5), 5, None), 5);
        // 5 bytes and our FIN.
        let fin = una.wrapping_add(5);
        assert_eq!(acked_data(ISS, una, fin.wrapping_add(1), 6, Some(fin)), 5);
        // Up to the FIN, not past it: the FIN is still in flight.
        assert_eq!(acked_data(ISS, una, fin, 5, Some(fin)), 5);
        // SYN and FIN with no data between.
        let fin = ISS.wrapping_add(1);
        assert_eq!(acked_data(ISS, ISS, fin.wrapping_add(1), 2, Some(fin)), 0);
    }

    #[test]
    fn already_taken_trims_what_we_have() {
        let rcv = 5u32;
        assert_eq!(already_taken(rcv, rcv, 10), None);
        assert_eq!(already_taken(rcv, rcv + 3, 10), None, "a gap");
        assert_eq!(already_taken(rcv, rcv - 3, 10), Some(3));
        assert_eq!(already_taken(rcv, rcv - 3, 2), Some(2), "all of it old");
        assert_eq!(already_taken(rcv, rcv - 1, 0), Some(0), "a window probe");
        // Across the wrap.
        assert_eq!(already_taken(2, u32::MAX - 1, 10), Some(4));
    }

    #[test]
    fn segments_take_their_payload_and_one_for_syn_and_fin() {
        assert_eq!(segment_space(0, false, false), 0);
        assert_eq!(segment_space(5, false, true), 6);
        assert_eq!(segment_space(0, true, true), 2);
    }

    #[test]
    fn window_fields_scale_and_saturate() {
        assert_eq!(window_field(1 << 20, 7), 8192);
        assert_eq!(window_field(127, 7), 0);
        assert_eq!(window_field(1 << 20, 0), 65535);
        assert_eq!(window_field(u32::MAX, 14), 65535);
        assert_eq!(window_bytes(8192, 7), 1 << 20);
        assert_eq!(window_bytes(1024, 0), 1024);
    }

    #[test]
    fn the_estimate_shrinks_until_half_is_used() {
        let full = Estimate {
            limit: 1000,
            free: 800,
        };
        assert_eq!(
            full.after_write(300),
            Some(Estimate {
                limit: 1000,
                free: 500
            })
        );
        assert_eq!(full.after_write(301), None);
        assert_eq!(full.after_write(usize::MAX), None);
        assert_eq!(full.after_write(0), Some(full));
    }

    #[test]
    fn payload_space_charges_each_buffer_its_overhead() {
        // 1460-byte segments: each costs 1460 + 1024 of the budget.
        let (limit, free) = payload_space(2484 * 10, 2484 * 4, 1460);
        assert_eq!((limit, free), (14600, 8760));
        // Segments above the per-buffer payload count as that much.
        assert_eq!(payload_space(17408, 0, 1 << 20), (16384, 16384));
        // A segment size of zero counts as one byte, and more queued than budgeted is full.
        assert_eq!(payload_space(1025, 5000, 0), (1, 0));
    }
}
