//! Wall-clock time as Kafka carries it: milliseconds since the Unix epoch
//! (record timestamps, commit times, transaction start times).
//!
//! The rules in this crate take the time as an argument; callers read it
//! here, once per request or tick, so that a test can pass any time it likes.
//! Durations that must not jump (sessions, timeouts) use `Instant` instead.

/// Milliseconds since the Unix epoch; 0 if the system clock reads before it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
