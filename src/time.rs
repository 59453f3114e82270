//! Packet time.
//!
//! Every timestamp exfilwatch handles is the capture time of a packet (or a duration between two
//! of them), never the wall clock: output depends only on the capture. A [`Timestamp`] is
//! nanoseconds since the Unix epoch in an `i64`, which covers 1677–2262 and every pcap/pcapng
//! timestamp resolution we read, and makes comparisons and idle arithmetic single integer ops.

use std::fmt;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A packet's capture time, nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From seconds and a sub-second part already in nanoseconds.
    pub fn from_parts(secs: i64, nanos: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos))
    }

    /// Whole seconds since the epoch (floor).
    pub fn secs(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SEC)
    }

    /// Nanoseconds within the second, `0..1e9`.
    pub fn subsec_nanos(self) -> u32 {
        self.0.rem_euclid(NANOS_PER_SEC) as u32
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// `self - earlier`, saturating; negative when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// Seconds as a float, for rates in the summary.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC as f64
    }
}

/// RFC 3339 in UTC with exactly six fractional digits (nanoseconds are truncated),
/// e.g. `2025-11-25T12:00:00.001123Z`, as EVE and most SIEMs expect.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        let n = self.write_rfc3339(&mut buf);
        // The buffer holds ASCII only.
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or("?"))
    }
}

impl Timestamp {
    /// Writes the RFC 3339 form into `out` (at least 40 bytes) and returns its length. On the
    /// per-alert path: no allocation, no formatting machinery.
    pub fn write_rfc3339(self, out: &mut [u8; 40]) -> usize {
        let secs = self.secs();
        let micros = self.subsec_nanos() / 1000;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            // Beyond four-digit years (not from any real capture): chrono's general form.
            let s = match chrono::DateTime::from_timestamp(secs, 0) {
                Some(dt) => format!("{}.{:06}Z", dt.format("%Y-%m-%dT%H:%M:%S"), micros),
                None => format!("{secs}.{micros:06}"),
            };
            let n = s.len().min(out.len());
            out[..n].copy_from_slice(&s.as_bytes()[..n]);
            return n;
        }
        let mut put = |at: usize, v: u32, width: usize| {
            let mut v = v;
            for i in (0..width).rev() {
                out[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, y as u32, 4);
        put(5, m, 2);
        put(8, d, 2);
        put(11, sod / 3600, 2);
        put(14, sod / 60 % 60, 2);
        put(17, sod % 60, 2);
        put(20, micros, 6);
        out[4] = b'-';
        out[7] = b'-';
        out[10] = b'T';
        out[13] = b':';
        out[16] = b':';
        out[19] = b'.';
        out[26] = b'Z';
        27
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A span of packet time in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub i64);

impl Duration {
    /// Whole seconds.
    pub const fn from_secs(s: i64) -> Duration {
        Duration(s * NANOS_PER_SEC)
    }

    /// As seconds, for display.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC as f64
    }

    /// Parses `500ms`, `30s`, `10m`, `1h`, `2d` (a whole number and a unit). Zero is allowed.
    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return None;
        }
        let n: i64 = num.parse().ok()?;
        let scale: i64 = match unit {
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            _ => return None,
        };
        n.checked_mul(scale).map(Duration)
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `90s`, `10m`, `1h`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (scale, unit) in [
            (86_400 * NANOS_PER_SEC, "d"),
            (3600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (1_000_000, "ms"),
        ] {
            if n != 0 && n % scale == 0 {
                return write!(f, "{}{}", n / scale, unit);
            }
        }
        write!(f, "{}ns", n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_micros_utc() {
        let t = Timestamp::from_parts(1_764_072_000, 1_123_999);
        assert_eq!(t.to_string(), "2025-11-25T12:00:00.001123Z");
    }

    #[test]
    fn formats_after_2038() {
        let t = Timestamp::from_parts(4_102_444_800, 0);
        assert_eq!(t.to_string(), "2100-01-01T00:00:00.000000Z");
    }

    #[test]
    fn formats_before_epoch() {
        let t = Timestamp(-1);
        assert_eq!(t.to_string(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn fast_format_agrees_with_chrono_across_eras() {
        // Every day boundary and leap-year rule from 1900 to 2400, against chrono.
        let mut t = -2_208_988_800i64; // 1900-01-01
        while t < 9_000_000_000 {
            let ts = Timestamp::from_parts(t + 45_296, 987_654_321);
            let want = format!(
                "{}.987654Z",
                chrono::DateTime::from_timestamp(t + 45_296, 0)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
            );
            assert_eq!(ts.to_string(), want);
            t += 86_400 * 7 + 3_607;
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(Duration::parse("1m"), Some(Duration::from_secs(60)));
        assert_eq!(Duration::parse("250ms"), Some(Duration(250_000_000)));
        assert_eq!(Duration::parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(Duration::parse("0s"), Some(Duration(0)));
        for bad in ["", "m", "5", "5x", "-5s", "1.5s", "99999999999999999999s"] {
            assert_eq!(Duration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn displays_durations_shortest() {
        assert_eq!(Duration::from_secs(600).to_string(), "10m");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(Duration(250_000_000).to_string(), "250ms");
    }
}
