//! The round-trip time toward the guest, and the retransmission timeout it gives (RFC 6298).
//!
//! One segment at a time is timed, from when it is sent until an ACK covers its end; a
//! retransmitted stretch is never timed (Karn's algorithm), since its ACK cannot tell which
//! copy arrived. Until the first measurement the timeout is RFC 6298's initial one second.

use std::time::{Duration, Instant};

use super::seq::before;
use super::{INITIAL_RTO, MAX_RTO};

/// The shortest retransmission timeout, Linux's `TCP_RTO_MIN`: a guest under load (an emulated
/// one, or one with 16 streams filling its receive memory) answers late, and a timeout that
/// expires first resends a window the guest already has.
pub(super) const MIN_RTO: Duration = Duration::from_millis(200);

/// The clock granularity RFC 6298 adds at least of: the engine's timer tick.
const GRANULARITY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rtt {
    /// SRTT and RTTVAR, once measured.
    smoothed: Option<(Duration, Duration)>,
    /// The segment being timed: the sequence number whose acknowledgement ends the measurement,
    /// and when it was sent.
    timing: Option<(u32, Instant)>,
    /// After a retransmission, nothing sent before this sequence number is timed.
    resent_below: Option<u32>,
}

impl Rtt {
    /// Segment `start..end` went to the guest at `now`: timed unless another is, or it was
    /// sent before.
    pub(super) fn sent(&mut self, start: u32, end: u32, now: Instant) {
        if let Some(resent) = self.resent_below {
            if before(start, resent) {
                return;
            }
            self.resent_below = None;
        }
        if self.timing.is_none() {
            self.timing = Some((end, now));
        }
    }

    /// Everything from `snd_una` up to `snd_nxt` goes again: none of it can be timed.
    pub(super) fn resending(&mut self, snd_nxt: u32) {
        self.timing = None;
        self.resent_below = Some(match self.resent_below {
            Some(below) if before(snd_nxt, below) => below,
            _ => snd_nxt,
        });
    }

    /// The guest acknowledged up to `ack` at `now`: a measurement if that covers the timed
    /// segment.
    pub(super) fn acked(&mut self, ack: u32, now: Instant) {
        let Some((end, sent)) = self.timing else {
            return;
        };
        if before(ack, end) {
            return;
        }
        self.timing = None;
        let sample = now.saturating_duration_since(sent);
        self.smoothed = Some(match self.smoothed {
            None => (sample, sample / 2),
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(sample);
                (srtt * 7 / 8 + sample / 8, rttvar * 3 / 4 + deviation / 4)
            }
        });
    }

    /// The retransmission timeout: SRTT + max(G, 4 RTTVAR), within [`MIN_RTO`] and
    /// [`MAX_RTO`].
    pub(super) fn rto(&self) -> Duration {
        match self.smoothed {
            None => INITIAL_RTO,
            Some((srtt, rttvar)) => (srtt + (rttvar * 4).max(GRANULARITY)).clamp(MIN_RTO, MAX_RTO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_follows_measurements_within_its_bounds() {
        let t0 = Instant::now();
        let mut rtt = Rtt::default();
        assert_eq!(rtt.rto(), INITIAL_RTO);
        rtt.sent(1000, 2000, t0);
        // Another segment while one is timed is not timed.
        rtt.sent(2000, 3000, t0 + Duration::from_millis(5));
        rtt.acked(1500, t0 + Duration::from_millis(9));
        assert_eq!(rtt.rto(), INITIAL_RTO, "the timed segment is not acked yet");
        rtt.acked(2000, t0 + Duration::from_millis(10));
        // SRTT 10 ms, RTTVAR 5 ms: 10 + max(100, 20) ms, raised to the minimum.
        assert_eq!(rtt.rto(), MIN_RTO);
        // A slow guest: 400 ms.
        rtt.sent(3000, 4000, t0 + Duration::from_secs(1));
        rtt.acked(4000, t0 + Duration::from_millis(1400));
        // SRTT 10*7/8 + 400/8 = 58.75 ms, RTTVAR 5*3/4 + 390/4 = 101.25 ms.
        assert_eq!(rtt.rto(), Duration::from_micros(58_750 + 405_000));
    }

    #[test]
    fn resent_data_is_not_timed_and_wrapping_numbers_compare() {
        let t0 = Instant::now();
        let mut rtt = Rtt::default();
        let start = u32::MAX - 500;
        rtt.sent(start, start.wrapping_add(1000), t0);
        rtt.resending(start.wrapping_add(1000));
        // The same stretch again, and its ACK much later: no measurement.
        rtt.sent(start, start.wrapping_add(1000), t0 + Duration::from_secs(1));
        rtt.acked(start.wrapping_add(1000), t0 + Duration::from_secs(5));
        assert_eq!(rtt.rto(), INITIAL_RTO);
        // New data after it is timed.
        rtt.sent(start.wrapping_add(1000), start.wrapping_add(2000), t0);
        rtt.acked(start.wrapping_add(2000), t0 + Duration::from_millis(300));
        // SRTT 300 ms, RTTVAR 150 ms: 300 + 600.
        assert_eq!(rtt.rto(), Duration::from_millis(900));
    }
}
