//! Rate limits for log lines a guest (or a host peer) can cause.
//!
//! # Theory of operation
//!
//! Anything a guest does as often as it likes must not write a log line each time: a guest
//! that ignores our window, or a host out of descriptors while the guest opens flows, would
//! otherwise fill the disk. Each call site of `guest_log!` has its own token bucket: a burst
//! of [`BURST`] lines, then one more every [`INTERVAL`]; lines past that are counted, and the
//! next line that goes out says how many were left out. Logs the guest drives per packet that
//! are of no use to an administrator are debug lines instead, not limited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one call site may write at once.
pub const BURST: u32 = 5;
/// How often one more line is allowed after a burst.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    /// When the bucket was last refilled; `None` before the first line.
    refilled: Option<Instant>,
    /// Lines left out since the last one written.
    suppressed: u64,
}

/// One call site's token bucket.
#[derive(Debug)]
pub struct RateLimit(Mutex<Bucket>);

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit(Mutex::new(Bucket {
            tokens: BURST,
            refilled: None,
            suppressed: 0,
        }))
    }

    /// Whether a line may be written now: `Some(lines left out since the last one)` if so.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`RateLimit::allow`] at time `now` (never earlier than a previous call's).
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let refilled = *b.refilled.get_or_insert(now);
        let periods = now.saturating_duration_since(refilled).as_nanos() / INTERVAL.as_nanos();
        if periods > 0 {
            let periods = u32::try_from(periods).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(periods).min(BURST);
            b.refilled = Some(if b.tokens == BURST {
                now
            } else {
                refilled + INTERVAL * periods
            });
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

/// `log::log!` for lines a guest can cause: limited per call site (see the module), with the
/// count of lines left out appended to the next one written.
macro_rules! guest_log {
    ($level:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if log::log_enabled!($level) {
            match LIMIT.allow() {
                Some(0) => log::log!($level, $($arg)+),
                Some(n) => log::log!(
                    $level,
                    "{} ({n} more like this not logged)",
                    format_args!($($arg)+)
                ),
                None => {}
            }
        }
    }};
}
pub(crate) use guest_log;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_interval_with_the_count_left_out() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.allow_at(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.allow_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(
            limit.allow_at(t0 + INTERVAL - Duration::from_millis(1)),
            None
        );
        assert_eq!(limit.allow_at(t0 + INTERVAL), Some(1001));
        assert_eq!(limit.allow_at(t0 + INTERVAL), None);
        // A long quiet spell refills the burst, no more.
        let later = t0 + INTERVAL * 100;
        assert_eq!(limit.allow_at(later), Some(1));
        for _ in 1..BURST {
            assert_eq!(limit.allow_at(later), Some(0));
        }
        assert_eq!(limit.allow_at(later), None);
    }

    #[test]
    fn lines_over_a_minute_of_flooding_stay_bounded() {
        let limit = RateLimit::new();
        let t0 = Instant::now();
        let written = (0..60_000u64)
            .filter(|ms| limit.allow_at(t0 + Duration::from_millis(*ms)).is_some())
            .count();
        // The burst, then one per interval.
        assert_eq!(written, BURST as usize + 5);
    }
}
