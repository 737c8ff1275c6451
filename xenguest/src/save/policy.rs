//! When to stop pre-copying and suspend the guest (pure logic, no Xen).
//!
//! The reference (libxenguest) stops after 5 iterations or when fewer than
//! 50 pages are dirty.  We aim at the smallest final pass instead: keep
//! copying while each round leaves clearly fewer dirty pages than the one
//! before (the guest's working set is being caught up with), and suspend
//! once it stops shrinking (what is left is what the guest dirties during
//! one short round) or is tiny, provided the final pass is estimated to
//! fit the downtime target: its pages times the page size over the
//! bandwidth measured so far.  Two safety nets bound a guest that dirties
//! memory faster than we can send it: a round limit and a limit on the
//! total bytes sent, as a multiple of the guest's RAM.

use std::time::Duration;

/// Tuning of the live (pre-copy) phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LivePolicy {
    /// Suspend once the estimated final pass takes at most this long
    /// (default 300 ms).
    pub downtime_target: Duration,
    /// Rounds (the full first pass counts as round 1) after which we
    /// suspend whatever the estimate (default 10).
    pub max_rounds: u32,
    /// Suspend once the bytes sent exceed this multiple of the guest's RAM
    /// (default 3.0).
    pub max_bytes_factor: f64,
}

impl Default for LivePolicy {
    fn default() -> Self {
        LivePolicy {
            downtime_target: Duration::from_millis(300),
            max_rounds: 10,
            max_bytes_factor: 3.0,
        }
    }
}

/// A round that leaves at least this share of the previous round's dirty
/// pages did not shrink the final pass enough to pay for another round.
const SHRINK: f64 = 0.75;

/// Dirty pages few enough to stop at once (the reference's threshold).
const TINY: u64 = 50;

/// Why pre-copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The estimated downtime fell below the target.
    Converged,
    /// The round limit was reached.
    RoundLimit,
    /// The byte limit (multiple of guest RAM) was reached.
    ByteLimit,
}

/// Bandwidth over the live rounds: bytes per second of page data written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bandwidth {
    bytes: u64,
    time: Duration,
}

impl Bandwidth {
    /// Accumulate one round.
    pub fn add(&mut self, bytes: u64, time: Duration) {
        self.bytes += bytes;
        self.time += time;
    }

    /// Bytes per second, or None before anything was measured.
    pub fn bytes_per_sec(&self) -> Option<f64> {
        let s = self.time.as_secs_f64();
        (self.bytes > 0 && s > 0.0).then(|| self.bytes as f64 / s)
    }

    /// Time to send `pages` pages (plus their 8-byte entries) at the
    /// measured rate; None if no rate is known yet.
    pub fn estimate(&self, pages: u64) -> Option<Duration> {
        let bps = self.bytes_per_sec()?;
        Some(Duration::from_secs_f64(pages as f64 * 4104.0 / bps))
    }
}

impl LivePolicy {
    /// Decide after round `round` (1-based, just finished) whether to stop,
    /// given the pages now dirty, the bandwidth so far, the total bytes
    /// sent and the guest's RAM in bytes.
    /// Called after each round with the pages now dirty (`prev_dirty`: after
    /// the round before, `None` after the first); `Some` ends pre-copy.
    pub fn decide(
        &self,
        round: u32,
        dirty_pages: u64,
        prev_dirty: Option<u64>,
        bw: &Bandwidth,
        bytes_sent: u64,
        ram_bytes: u64,
    ) -> Option<StopReason> {
        let fits = match bw.estimate(dirty_pages) {
            Some(est) => est <= self.downtime_target,
            None => dirty_pages == 0,
        };
        let settled = dirty_pages <= TINY
            || prev_dirty.is_some_and(|p| dirty_pages as f64 >= SHRINK * p as f64);
        if fits && settled {
            return Some(StopReason::Converged);
        }
        if round >= self.max_rounds {
            return Some(StopReason::RoundLimit);
        }
        if bytes_sent as f64 > self.max_bytes_factor * ram_bytes as f64 {
            return Some(StopReason::ByteLimit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bw(mib_per_s: u64) -> Bandwidth {
        let mut b = Bandwidth::default();
        b.add(mib_per_s << 20, Duration::from_secs(1));
        b
    }

    #[test]
    fn converges_once_the_dirty_set_stops_shrinking_within_the_target() {
        let p = LivePolicy::default();
        let b = bw(100);
        // Still shrinking fast: another round pays.
        assert_eq!(p.decide(2, 5000, Some(20000), &b, 1 << 20, 1 << 30), None);
        // After the first round there is nothing to compare with.
        assert_eq!(p.decide(1, 5000, None, &b, 1 << 20, 1 << 30), None);
        // Stopped shrinking, and the final pass fits the target.
        assert_eq!(
            p.decide(3, 4000, Some(5000), &b, 1 << 20, 1 << 30),
            Some(StopReason::Converged)
        );
        // Stopped shrinking but too big for the target: go on.
        assert_eq!(p.decide(3, 20000, Some(20000), &b, 1 << 20, 1 << 30), None);
        // Tiny: stop at once.
        assert_eq!(
            p.decide(2, 40, Some(5000), &b, 1 << 20, 1 << 30),
            Some(StopReason::Converged)
        );
        assert_eq!(
            p.decide(2, 0, None, &Bandwidth::default(), 0, 1 << 30),
            Some(StopReason::Converged)
        );
        assert_eq!(
            p.decide(2, 1, None, &Bandwidth::default(), 0, 1 << 30),
            None
        );
    }

    #[test]
    fn safety_nets() {
        let p = LivePolicy {
            max_rounds: 4,
            ..LivePolicy::default()
        };
        let b = bw(1);
        assert_eq!(p.decide(3, 50_000, Some(50_000), &b, 0, 1 << 30), None);
        assert_eq!(
            p.decide(4, 50_000, Some(50_000), &b, 0, 1 << 30),
            Some(StopReason::RoundLimit)
        );
        assert_eq!(
            p.decide(2, 50_000, Some(50_000), &b, 4 << 30, 1 << 30),
            Some(StopReason::ByteLimit)
        );
    }

    #[test]
    fn estimate_scales_with_pages() {
        let b = bw(4);
        let e = b.estimate(1024).unwrap();
        assert!(
            e > Duration::from_millis(990) && e < Duration::from_millis(1010),
            "{e:?}"
        );
        assert!(Bandwidth::default().estimate(1).is_none());
    }
}
