//! Keyframe requests towards a publisher, throttled.
//!
//! Every subscriber that joins, loses packets or shows a frozen picture asks the publisher for a
//! keyframe. Forwarding each request would make the publisher's encoder emit keyframes
//! back-to-back (a "PLI storm"), multiplying its bitrate; so requests are coalesced to at most
//! one per [`KEYFRAME_INTERVAL`] per publisher. A request that arrives inside the window is not
//! dropped: it is remembered and sent when the window ends, so a subscriber that joins just after
//! another one still gets its keyframe within the interval.

use std::time::{Duration, Instant};

/// The shortest time between two keyframe requests sent to one publisher.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Throttle state for one publisher.
#[derive(Debug, Default, Clone)]
pub struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// Someone wants a keyframe at `now`. Returns true when the request must be sent now;
    /// otherwise it is deferred until [`Self::deadline`].
    pub fn request(&mut self, now: Instant) -> bool {
        if self.may_send(now) {
            self.last_sent = Some(now);
            self.pending = false;
            true
        } else {
            self.pending = true;
            false
        }
    }

    /// Called when time passes: true when a deferred request is due now (and is then consumed).
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending && self.may_send(now) {
            self.last_sent = Some(now);
            self.pending = false;
            true
        } else {
            false
        }
    }

    /// When a deferred request becomes due, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        Some(match self.last_sent {
            Some(t) => t + KEYFRAME_INTERVAL,
            None => Instant::now(),
        })
    }

    fn may_send(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_request_goes_out_immediately() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert_eq!(k.deadline(), None);
    }

    #[test]
    fn a_burst_becomes_one_request_now_and_one_deferred() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        // 20 subscribers asking within the window: nothing goes out...
        for i in 1..=20 {
            assert!(!k.request(t0 + ms(i * 10)));
        }
        // ...but exactly one deferred request is due at the end of the window.
        assert_eq!(k.deadline(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(!k.poll(t0 + ms(499)));
        assert!(k.poll(t0 + ms(500)));
        assert!(!k.poll(t0 + ms(501)));
        assert_eq!(k.deadline(), None);
    }

    #[test]
    fn never_more_than_one_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        let mut sent = Vec::new();
        // A request every 10 ms for 3 s, polling every 10 ms too.
        for i in 0..300u64 {
            let now = t0 + ms(i * 10);
            if k.request(now) || k.poll(now) {
                sent.push(now);
            }
        }
        assert!(sent.len() >= 5 && sent.len() <= 7, "sent {}", sent.len());
        for w in sent.windows(2) {
            assert!(w[1] - w[0] >= KEYFRAME_INTERVAL);
        }
    }
}
