//! Kafka's rules for topic names and partition counts (topic configs: `topic_configs`).

use crate::error::MetaError;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// The most partitions one topic may have. Kafka has no hard limit; this one
/// keeps a typo (an extra zero or three) from creating a million streams.
pub const PARTITION_COUNT_MAX: i64 = 10_000;

/// Checks a topic name against Kafka's rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let invalid = |reason: &str| MetaError::InvalidTopicName { name: name.to_owned(), reason: reason.to_owned() };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return Err(invalid("it is longer than 249 characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(invalid(&format!("character {bad:?} is not one of [a-zA-Z0-9._-]")));
    }
    Ok(())
}

/// The brokers' internal topics: a group's (or transaction's) partition is
/// a hash modulo their partition count, so they are never grown or deleted.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Kafka treats `.` and `_` as the same character in metric names, so it refuses
/// a topic whose name differs from an existing one only in those.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// Checks a requested partition count.
pub fn validate_partition_count(count: i64) -> Result<(), MetaError> {
    let invalid = |reason: &str| MetaError::InvalidPartitions { count, reason: reason.to_owned() };
    if count < 1 {
        return Err(invalid("a topic needs at least one partition"));
    }
    if count > PARTITION_COUNT_MAX {
        return Err(invalid("more than 10000 partitions in one topic"));
    }
    Ok(())
}

pub use crate::topic_configs::{topic_config_default, validate_topic_config};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["orders", "a", "Orders.v2_eu-west", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "has space", "ümlaut", "slash/", &"x".repeat(250)] {
            assert!(matches!(validate_topic_name(bad), Err(MetaError::InvalidTopicName { .. })), "{bad}");
        }
    }

    #[test]
    fn partition_counts_must_be_positive_and_bounded() {
        assert!(validate_partition_count(0).is_err());
        assert!(validate_partition_count(-3).is_err());
        assert!(validate_partition_count(PARTITION_COUNT_MAX + 1).is_err());
        assert_eq!(validate_partition_count(1), Ok(()));
        assert_eq!(validate_partition_count(PARTITION_COUNT_MAX), Ok(()));
    }
}
