//! Durations, sizes and ranges as written in scenario files.

use std::time::Duration;

/// `"3s"`, `"200ms"`, `"5m"`, `"1h 30m"` (humantime syntax).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("bad duration {s:?} ({e}); write e.g. \"200ms\", \"3s\", \"5m\", \"1h\"")
    })
}

/// A fixed duration or a range `"1s..5s"` to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (duration(a)?, duration(b)?);
                if min > max {
                    return Err(format!("range {s:?} ends before it starts"));
                }
                Ok(Self { min, max })
            }
            None => {
                let d = duration(s)?;
                Ok(Self { min: d, max: d })
            }
        }
    }

    /// The value for a draw `u` in [0, 1).
    pub fn pick(&self, u: f64) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        let span = (self.max - self.min).as_secs_f64();
        self.min + Duration::from_secs_f64(span * u)
    }
}

/// A time window since server start: `"0s..5m"`, `"10m.."` (open end),
/// `"0s..30s every 1m"` (repeating: the first 30 s of every minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Option<Duration>,
    pub every: Option<Duration>,
}

impl Window {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (range, every) = match s.split_once(" every ") {
            Some((r, p)) => {
                let p = duration(p)?;
                if p.is_zero() {
                    return Err(format!("window {s:?} repeats every 0s"));
                }
                (r, Some(p))
            }
            None => (s, None),
        };
        let Some((a, b)) = range.split_once("..") else {
            return Err(format!(
                "bad window {s:?}; write \"START..END\" such as \"0s..5m\", \"10m..\" or \"0s..30s every 1m\""
            ));
        };
        let start = if a.trim().is_empty() {
            Duration::ZERO
        } else {
            duration(a)?
        };
        let end = if b.trim().is_empty() {
            None
        } else {
            Some(duration(b)?)
        };
        if end.is_some_and(|e| e < start) {
            return Err(format!("window {s:?} ends before it starts"));
        }
        if let Some(p) = every {
            if end.is_none_or(|e| e > p) {
                return Err(format!("window {s:?} must end within its period"));
            }
        }
        Ok(Self { start, end, every })
    }

    pub fn contains(&self, elapsed: Duration) -> bool {
        let t = match self.every {
            Some(p) => Duration::from_nanos((elapsed.as_nanos() % p.as_nanos()) as u64),
            None => elapsed,
        };
        t >= self.start && self.end.is_none_or(|e| t < e)
    }
}

/// A rate `"N/DURATION"`: `"5/1m"`, `"100/1h"`.
pub fn rate(s: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("bad rate {s:?}; write \"N/DURATION\" such as \"5/1m\" or \"100/1h\"");
    let (n, d) = s.split_once('/').ok_or_else(bad)?;
    let n = crate::proto::command::parse_number(n.trim()).ok_or_else(bad)?;
    let d = duration(d).map_err(|_| bad())?;
    if n == 0 || d.is_zero() {
        return Err(format!(
            "rate {s:?} must allow at least 1 in a window longer than 0s"
        ));
    }
    Ok((n, d))
}

/// A size: bytes as an integer, or a number with a unit. KB, MB, GB are
/// decimal (1 MB = 1,000,000 bytes, as mail providers state their limits);
/// KiB, MiB, GiB are binary.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        u => {
            return Err(format!(
                "bad size {s:?}: unknown unit {u:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}; write e.g. \"35MB\" or \"512KiB\""))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// A size comparison: `"> 10MB"`, `"<= 1KB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeCmp {
    pub op: CmpOp,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl SizeCmp {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (op, rest) = if let Some(r) = t.strip_prefix(">=") {
            (CmpOp::Ge, r)
        } else if let Some(r) = t.strip_prefix("<=") {
            (CmpOp::Le, r)
        } else if let Some(r) = t.strip_prefix("==") {
            (CmpOp::Eq, r)
        } else if let Some(r) = t.strip_prefix('>') {
            (CmpOp::Gt, r)
        } else if let Some(r) = t.strip_prefix('<') {
            (CmpOp::Lt, r)
        } else if let Some(r) = t.strip_prefix('=') {
            (CmpOp::Eq, r)
        } else {
            return Err(format!(
                "bad size condition {s:?}; write e.g. \"> 10MB\" or \"<= 1KB\""
            ));
        };
        Ok(Self {
            op,
            bytes: size(rest)?,
        })
    }

    pub fn holds(&self, n: u64) -> bool {
        match self.op {
            CmpOp::Lt => n < self.bytes,
            CmpOp::Le => n <= self.bytes,
            CmpOp::Gt => n > self.bytes,
            CmpOp::Ge => n >= self.bytes,
            CmpOp::Eq => n == self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("35MB"), Ok(35_000_000));
        assert_eq!(size("1 KiB"), Ok(1024));
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("1.5kb"), Ok(1500));
        assert!(size("12 parsecs").is_err());
        assert!(size("99999999999999999999999GB").is_err());
        assert!(SizeCmp::parse("> 10MB").unwrap().holds(10_000_001));
        assert!(!SizeCmp::parse("<= 1KB").unwrap().holds(1001));
    }

    #[test]
    fn ranges_and_windows() {
        let r = DurationRange::parse("1s..5s").unwrap();
        assert_eq!(r.pick(0.0), Duration::from_secs(1));
        assert_eq!(r.pick(0.5), Duration::from_secs(3));
        assert!(DurationRange::parse("5s..1s").is_err());
        let w = Window::parse("0s..5m").unwrap();
        assert!(w.contains(Duration::from_secs(299)));
        assert!(!w.contains(Duration::from_secs(300)));
        assert!(Window::parse("10m..")
            .unwrap()
            .contains(Duration::from_secs(3600)));
        assert!(Window::parse("5m").is_err());
        let flap = Window::parse("0s..30s every 1m").unwrap();
        assert!(flap.contains(Duration::from_secs(10)));
        assert!(!flap.contains(Duration::from_secs(45)));
        assert!(flap.contains(Duration::from_secs(125)));
        assert!(Window::parse("0s..2m every 1m").is_err());
    }
}
