//! The webhook settings: the retry schedule (`--webhook-retry-schedule`) and the
//! defaults of the `--webhook-*` flags, which are fields of [`Config`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{format_duration, parse_duration};

/// `--webhook-retry-schedule`'s default: Svix's schedule.
pub const DEFAULT_WEBHOOK_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";
/// `--webhook-timeout`'s default: connecting, and from the request written to
/// the whole response.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// `--webhook-disable-after`'s default: five days failing without a success.
pub const DEFAULT_WEBHOOK_DISABLE_AFTER: Duration = Duration::from_secs(5 * 86_400);
/// Most delays a retry schedule may list.
pub const MAX_WEBHOOK_RETRIES: usize = 100;
/// Largest response body a webhook's answer is read to, in bytes.
pub const MAX_WEBHOOK_RESPONSE_BYTES: usize = 64 * 1024;

/// The delays before the second, third, ... attempt at an event: an event gets
/// `delays.len() + 1` attempts before it becomes a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_WEBHOOK_RETRY_SCHEDULE
            .parse()
            .expect("invariant: the default schedule parses")
    }
}

impl FromStr for RetrySchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        // Empty or `0`: no retries, one attempt.
        if t.is_empty() || t == "0" || t == "none" {
            return Ok(RetrySchedule(Vec::new()));
        }
        let delays = t
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_WEBHOOK_RETRIES {
            return Err(format!(
                "at most {MAX_WEBHOOK_RETRIES} delays, not {}",
                delays.len()
            ));
        }
        Ok(RetrySchedule(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|&d| short(d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// A delay in its largest whole unit (`5m` rather than `300s`).
fn short(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format_duration(d)
}

/// `--webhook-timeout`, `--webhook-disable-after`: a duration above zero.
#[cfg(feature = "tools")]
pub(super) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_print_back() {
        let s = RetrySchedule::default();
        assert_eq!(s.0.len(), 7);
        assert_eq!(s.0[1], Duration::from_secs(300));
        assert_eq!(s.to_string(), DEFAULT_WEBHOOK_RETRY_SCHEDULE);
        let s: RetrySchedule = "100ms, 1s,2m".parse().expect("parses");
        assert_eq!(s.to_string(), "100ms,1s,2m");
        assert_eq!("0".parse::<RetrySchedule>(), Ok(RetrySchedule(Vec::new())));
        assert!("5s,x".parse::<RetrySchedule>().is_err());
        assert!("5y".parse::<RetrySchedule>().is_err());
    }
}
