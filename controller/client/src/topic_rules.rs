//! Kafka's rules for topic names, partition counts and topic configs.

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

/// The topic configs Keel understands, with Kafka's names and value rules.
/// A key not listed here is refused rather than stored and ignored.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "retention.bytes",
    "retention.ms",
];

/// Kafka's default for a topic config, used where a topic does not set it.
pub fn topic_config_default(key: &str) -> Option<&'static str> {
    Some(match key {
        "cleanup.policy" => "delete",
        "compression.type" => "producer",
        "delete.retention.ms" => "86400000",
        "max.message.bytes" => "1048588",
        "message.timestamp.after.max.ms" => "9223372036854775807",
        "message.timestamp.before.max.ms" => "9223372036854775807",
        "message.timestamp.type" => "CreateTime",
        "retention.bytes" => "-1",
        "retention.ms" => "604800000",
        _ => return None,
    })
}

/// Checks one topic config key and value.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), MetaError> {
    let invalid = |reason: &str| MetaError::InvalidConfig {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let long_at_least = |min: i64| match value.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(invalid(&format!("must be at least {min}"))),
        Err(_) => Err(invalid("must be a whole number")),
    };
    match key {
        "cleanup.policy" => {
            let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
            parts.sort_unstable();
            match parts.as_slice() {
                ["delete"] | ["compact"] | ["compact", "delete"] => Ok(()),
                _ => Err(invalid("must be delete, compact or delete,compact")),
            }
        }
        "compression.type" => match value {
            "uncompressed" | "zstd" | "lz4" | "snappy" | "gzip" | "producer" => Ok(()),
            _ => Err(invalid("must be one of uncompressed, zstd, lz4, snappy, gzip, producer")),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(invalid("must be CreateTime or LogAppendTime")),
        },
        "max.message.bytes" => match value.trim().parse::<i32>() {
            Ok(n) if n >= 0 => Ok(()),
            _ => Err(invalid("must be a whole number from 0 to 2147483647")),
        },
        "retention.ms" | "retention.bytes" => long_at_least(-1),
        "delete.retention.ms" | "message.timestamp.after.max.ms" | "message.timestamp.before.max.ms" => {
            long_at_least(0)
        }
        _ => Err(MetaError::UnknownConfig { key: key.to_owned() }),
    }
}

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

    #[test]
    fn configs_are_checked_by_key_and_value() {
        assert_eq!(validate_topic_config("retention.ms", "-1"), Ok(()));
        assert_eq!(validate_topic_config("cleanup.policy", "compact,delete"), Ok(()));
        assert!(matches!(validate_topic_config("retention.ms", "-2"), Err(MetaError::InvalidConfig { .. })));
        assert!(matches!(validate_topic_config("retention.ms", "soon"), Err(MetaError::InvalidConfig { .. })));
        assert!(matches!(validate_topic_config("cleanup.policy", "shred"), Err(MetaError::InvalidConfig { .. })));
        assert!(matches!(validate_topic_config("retention.hours", "1"), Err(MetaError::UnknownConfig { .. })));
        for key in TOPIC_CONFIG_KEYS {
            assert!(!matches!(validate_topic_config(key, "x"), Err(MetaError::UnknownConfig { .. })), "{key}");
            let default = topic_config_default(key).unwrap_or_else(|| panic!("{key} has no default"));
            assert_eq!(validate_topic_config(key, default), Ok(()), "{key}'s default is valid");
        }
    }
}
