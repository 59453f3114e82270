//! Rate limits on packet time, Suricata's `type limit` semantics: per rule and tracking key, a
//! window opens at the key's first alert at time `t` and covers `[t, t + per)`; at most `count`
//! alerts are written in it; the first alert at or after `t + per` opens the next window.
//! Suppressed alerts are counted per key and reported on the key's next written alert.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::rules::{Limit, Track};
use crate::time::{Duration, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Src(IpAddr),
    Dst(IpAddr),
    Rule,
    Flow(u64),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Timestamp,
    per: Duration,
    sent: u64,
    /// Suppressed since the last alert written for this key.
    pending: u64,
}

/// What to do with a matched alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, reporting this many suppressed before it.
    Emit { suppressed: u64 },
    /// Hold it back (counted).
    Suppress,
}

/// Limit state for all rules.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: HashMap<(usize, Key), Window>,
}

/// How often (packet time) [`Limiter::sweep`] is meant to be called.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Limiter {
    /// Decides for one match of rule `rule` (index) with limit `limit`, at time `ts`, of the
    /// flow `flow_id` (unique among all flows this limiter sees).
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        rule: usize,
        limit: &Limit,
        ts: Timestamp,
        src: IpAddr,
        dest: IpAddr,
        flow_id: u64,
    ) -> Verdict {
        let key = match limit.track {
            Track::BySrc => Key::Src(src),
            Track::ByDst => Key::Dst(dest),
            Track::ByRule => Key::Rule,
            Track::ByFlow => Key::Flow(flow_id),
        };
        let w = self.windows.entry((rule, key)).or_insert(Window {
            start: ts,
            per: limit.per,
            sent: 0,
            pending: 0,
        });
        if ts.since(w.start) >= w.per {
            w.start = ts;
            w.sent = 0;
        }
        if w.sent < limit.count {
            w.sent += 1;
            let suppressed = std::mem::take(&mut w.pending);
            Verdict::Emit { suppressed }
        } else {
            w.pending += 1;
            Verdict::Suppress
        }
    }

    /// Forgets windows that have closed and owe no suppressed count, so memory follows the
    /// keys active in the last `per`, not every key ever seen. A walk over every key: the
    /// caller paces it, every [`SWEEP_EVERY`] of packet time.
    pub fn sweep(&mut self, now: Timestamp) {
        self.windows
            .retain(|_, w| w.pending > 0 || now.since(w.start) < w.per);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(count: u64, secs: i64, track: Track) -> Limit {
        Limit {
            count,
            per: Duration::from_secs(secs),
            track,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_parts(s, 0)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 2));

    #[test]
    fn limit_window_opens_at_first_alert_and_reports_suppressed() {
        let mut l = Limiter::default();
        let l2 = lim(2, 60, Track::BySrc);
        let v: Vec<Verdict> = [0, 1, 2, 3, 59, 60, 61]
            .iter()
            .map(|&s| l.check(0, &l2, t(s), A, B, 1))
            .collect();
        use Verdict::*;
        assert_eq!(
            v,
            vec![
                Emit { suppressed: 0 },
                Emit { suppressed: 0 },
                Suppress,
                Suppress,
                Suppress,
                Emit { suppressed: 3 },
                Emit { suppressed: 0 },
            ]
        );
    }

    #[test]
    fn limit_keys_are_separate() {
        let mut l = Limiter::default();
        let l1 = lim(1, 60, Track::BySrc);
        assert_eq!(
            l.check(0, &l1, t(0), A, B, 1),
            Verdict::Emit { suppressed: 0 }
        );
        assert_eq!(
            l.check(0, &l1, t(1), B, A, 2),
            Verdict::Emit { suppressed: 0 }
        );
        assert_eq!(l.check(0, &l1, t(2), A, B, 3), Verdict::Suppress);
        // Another rule with the same key is tracked apart.
        assert_eq!(
            l.check(1, &l1, t(2), A, B, 3),
            Verdict::Emit { suppressed: 0 }
        );
    }

    #[test]
    fn sweep_keeps_pending_counts() {
        let mut l = Limiter::default();
        let l1 = lim(1, 60, Track::ByRule);
        l.check(0, &l1, t(0), A, B, 1);
        l.check(0, &l1, t(1), A, B, 1);
        l.sweep(t(1000));
        assert_eq!(l.len(), 1, "a key owing a suppressed count is kept");
        assert_eq!(
            l.check(0, &l1, t(1001), A, B, 1),
            Verdict::Emit { suppressed: 1 }
        );
        l.sweep(t(2000));
        assert!(l.is_empty());
    }
}
