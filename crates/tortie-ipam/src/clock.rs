//! The injected clock: grace periods and claim times read time only through [`Clock`].

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<SystemTime>,
}

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// A clock stopped at 2025-01-01T00:00:00Z.
    pub fn at_epoch_2025() -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// RFC 3339 with nanoseconds, as stored in tortie's observation records.
pub(crate) fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// RFC 3339 with whole seconds, as Kubernetes `metav1.Time` (Calico's `affinityClaimTime`).
pub(crate) fn format_time_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 time written by us or by Calico.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s)
        .or_else(|_| humantime::parse_rfc3339_weak(s))
        .ok()
}

/// How long ago `then` was, zero if it is in the future.
pub(crate) fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let c = FakeClock::at_epoch_2025();
        let s = format_time_seconds(c.now());
        assert_eq!(s, "2025-01-01T00:00:00Z");
        assert_eq!(parse_time(&s), Some(c.now()));
        c.advance(Duration::from_millis(1500));
        assert_eq!(parse_time(&format_time(c.now())), Some(c.now()));
        assert_eq!(
            age(c.now(), c.now() + Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
