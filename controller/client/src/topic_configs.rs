//! Every topic config Kafka 4 defines, with its type, default, the broker
//! setting that is its default in Kafka (its synonym), its rule for values
//! and whether Keel applies it. All are accepted, stored and reported
//! (DescribeConfigs); the ones that mean nothing where data lives in a WAL
//! across three zones and then in an object store (segments, indexes,
//! flushing, replication, tiered storage) change nothing. A name not listed
//! is refused.

use crate::error::MetaError;

/// A config's type, as DescribeConfigs reports it (Kafka's `ConfigType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// The values a config takes.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// A whole number of the config's type, at least this.
    AtLeast(i64),
    /// A whole number of the config's type within these bounds.
    Between(i64, i64),
    /// A number within these bounds.
    Ratio(f64, f64),
    Boolean,
    /// One of these.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these, at least one.
    ListOf(&'static [&'static str]),
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs.
    ThrottledReplicas,
    /// A compression level: -1 (the codec's default) or within these bounds.
    Level(i64, i64),
}

/// One topic config.
#[derive(Clone, Copy, Debug)]
pub struct TopicConfig {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    /// The broker setting that gives the default in Kafka (`log.retention.ms`
    /// for `retention.ms`), reported as a synonym.
    pub synonym: Option<&'static str>,
    /// Whether Keel acts on it; the others are stored and reported only.
    pub applied: bool,
    pub doc: &'static str,
    rule: Rule,
}

const LONG_MAX: &str = "9223372036854775807";

macro_rules! config {
    ($name:literal, $kind:ident, $default:expr, $synonym:expr, $applied:literal, $rule:expr, $doc:literal) => {
        TopicConfig {
            name: $name,
            kind: ConfigType::$kind,
            default: $default,
            synonym: $synonym,
            applied: $applied,
            doc: $doc,
            rule: $rule,
        }
    };
}

/// Kafka 4's topic configs, by name.
pub const TOPIC_CONFIGS: &[TopicConfig] =
    &[
        config!(
            "cleanup.policy",
            List,
            "delete",
            Some("log.cleanup.policy"),
            true,
            Rule::ListOf(&["compact", "delete"]),
            "delete: old data goes by retention.ms and retention.bytes; compact: the last value of each key is kept."
        ),
        config!("compression.gzip.level", Int, "-1", Some("compression.gzip.level"), false, Rule::Level(1, 9),
        "The gzip level when compression.type is gzip. Stored only: Keel keeps batches as producers compressed them."),
        config!(
            "compression.lz4.level",
            Int,
            "9",
            Some("compression.lz4.level"),
            false,
            Rule::Between(1, 17),
            "The lz4 level when compression.type is lz4. Stored only: Keel keeps batches as producers compressed them."
        ),
        config!(
            "compression.type",
            String,
            "producer",
            Some("compression.type"),
            false,
            Rule::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
            "The topic's compression codec. Stored only: Keel keeps batches as producers compressed them (producer)."
        ),
        config!("compression.zstd.level", Int, "3", Some("compression.zstd.level"), false, Rule::Between(-131072, 22),
        "The zstd level when compression.type is zstd. Stored only: Keel keeps batches as producers compressed them."),
        config!(
            "delete.retention.ms",
            Long,
            "86400000",
            Some("log.cleaner.delete.retention.ms"),
            true,
            Rule::AtLeast(0),
            "How long a compacted topic keeps a key's tombstone (a null value)."
        ),
        config!(
            "file.delete.delay.ms",
            Long,
            "60000",
            Some("log.segment.delete.delay.ms"),
            false,
            Rule::AtLeast(0),
            "Stored only: Keel deletes unreferenced objects after the brokers' object_delete_delay."
        ),
        config!(
            "flush.messages",
            Long,
            LONG_MAX,
            Some("log.flush.interval.messages"),
            false,
            Rule::AtLeast(1),
            "Stored only: every acknowledged record is already fsynced on WAL nodes in two zones."
        ),
        config!(
            "flush.ms",
            Long,
            LONG_MAX,
            Some("log.flush.interval.ms"),
            false,
            Rule::AtLeast(0),
            "Stored only: every acknowledged record is already fsynced on WAL nodes in two zones."
        ),
        config!(
            "follower.replication.throttled.replicas",
            List,
            "",
            None,
            false,
            Rule::ThrottledReplicas,
            "Stored only: Keel has no follower replicas to throttle."
        ),
        config!(
            "index.interval.bytes",
            Int,
            "4096",
            Some("log.index.interval.bytes"),
            false,
            Rule::AtLeast(0),
            "Stored only: objects carry their own index."
        ),
        config!(
            "leader.replication.throttled.replicas",
            List,
            "",
            None,
            false,
            Rule::ThrottledReplicas,
            "Stored only: Keel has no follower replicas to throttle."
        ),
        config!(
            "local.retention.bytes",
            Long,
            "-2",
            Some("log.local.retention.bytes"),
            false,
            Rule::AtLeast(-2),
            "Stored only: brokers keep no local log (tiered storage is how Keel always stores data)."
        ),
        config!(
            "local.retention.ms",
            Long,
            "-2",
            Some("log.local.retention.ms"),
            false,
            Rule::AtLeast(-2),
            "Stored only: brokers keep no local log (tiered storage is how Keel always stores data)."
        ),
        config!(
            "max.compaction.lag.ms",
            Long,
            LONG_MAX,
            Some("log.cleaner.max.compaction.lag.ms"),
            false,
            Rule::AtLeast(1),
            "Stored only: compaction runs on the brokers' compaction schedule."
        ),
        config!(
            "max.message.bytes",
            Int,
            "1048588",
            Some("message.max.bytes"),
            true,
            Rule::AtLeast(0),
            "The largest record batch the topic takes, after compression."
        ),
        config!(
            "message.timestamp.after.max.ms",
            Long,
            LONG_MAX,
            Some("log.message.timestamp.after.max.ms"),
            true,
            Rule::AtLeast(0),
            "How far after the broker's clock a CreateTime record's timestamp may be."
        ),
        config!(
            "message.timestamp.before.max.ms",
            Long,
            LONG_MAX,
            Some("log.message.timestamp.before.max.ms"),
            true,
            Rule::AtLeast(0),
            "How far before the broker's clock a CreateTime record's timestamp may be."
        ),
        config!(
            "message.timestamp.type",
            String,
            "CreateTime",
            Some("log.message.timestamp.type"),
            true,
            Rule::OneOf(&["CreateTime", "LogAppendTime"]),
            "CreateTime keeps the producer's timestamps; LogAppendTime sets the broker's."
        ),
        config!(
            "min.cleanable.dirty.ratio",
            Double,
            "0.5",
            Some("log.cleaner.min.cleanable.ratio"),
            false,
            Rule::Ratio(0.0, 1.0),
            "Stored only: compaction runs on the brokers' compaction schedule."
        ),
        config!(
            "min.compaction.lag.ms",
            Long,
            "0",
            Some("log.cleaner.min.compaction.lag.ms"),
            false,
            Rule::AtLeast(0),
            "Stored only: compaction runs on the brokers' compaction schedule."
        ),
        config!(
            "min.insync.replicas",
            Int,
            "1",
            Some("min.insync.replicas"),
            false,
            Rule::AtLeast(1),
            "Stored only: an acknowledged record is on WAL nodes in two zones, whatever this says."
        ),
        config!(
            "preallocate",
            Boolean,
            "false",
            Some("log.preallocate"),
            false,
            Rule::Boolean,
            "Stored only: WAL segments are always preallocated."
        ),
        config!(
            "remote.copy.lag.bytes",
            Long,
            "0",
            None,
            false,
            Rule::AtLeast(-1),
            "Stored only: brokers upload to the object store on their own schedule (upload_interval, upload_bytes)."
        ),
        config!(
            "remote.copy.lag.ms",
            Long,
            "0",
            None,
            false,
            Rule::AtLeast(-1),
            "Stored only: brokers upload to the object store on their own schedule (upload_interval, upload_bytes)."
        ),
        config!(
            "remote.log.copy.disable",
            Boolean,
            "false",
            None,
            false,
            Rule::Boolean,
            "Stored only: every partition's data is uploaded to the object store."
        ),
        config!(
            "remote.log.delete.on.disable",
            Boolean,
            "false",
            None,
            false,
            Rule::Boolean,
            "Stored only: every partition's data is uploaded to the object store."
        ),
        config!(
            "remote.storage.enable",
            Boolean,
            "false",
            None,
            false,
            Rule::Boolean,
            "Stored only: every partition's data is uploaded to the object store."
        ),
        config!(
            "retention.bytes",
            Long,
            "-1",
            Some("log.retention.bytes"),
            true,
            Rule::AtLeast(i64::MIN),
            "The most bytes a partition keeps before its oldest data is deleted; -1 for no limit."
        ),
        config!(
            "retention.ms",
            Long,
            "604800000",
            Some("log.retention.ms"),
            true,
            Rule::AtLeast(-1),
            "How long a partition keeps data before it is deleted; -1 for no limit."
        ),
        config!(
            "segment.bytes",
            Int,
            "1073741824",
            Some("log.segment.bytes"),
            false,
            Rule::AtLeast(1 << 20),
            "Stored only: Keel has no log segments; objects are sized by the brokers' upload_bytes."
        ),
        config!(
            "segment.index.bytes",
            Int,
            "10485760",
            Some("log.index.size.max.bytes"),
            false,
            Rule::AtLeast(4),
            "Stored only: objects carry their own index."
        ),
        config!(
            "segment.jitter.ms",
            Long,
            "0",
            Some("log.roll.jitter.ms"),
            false,
            Rule::AtLeast(0),
            "Stored only: Keel has no log segments."
        ),
        config!(
            "segment.ms",
            Long,
            "604800000",
            Some("log.roll.ms"),
            false,
            Rule::AtLeast(1),
            "Stored only: Keel has no log segments; brokers upload every upload_interval."
        ),
        config!(
            "unclean.leader.election.enable",
            Boolean,
            "false",
            Some("unclean.leader.election.enable"),
            false,
            Rule::Boolean,
            "Stored only: a new leader always starts at the acknowledged end; there is no unclean election."
        ),
    ];

/// The config named `name`, if Kafka defines it for topics.
pub fn topic_config(name: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|config| config.name == name)
}

/// Kafka's default for a topic config.
pub fn topic_config_default(name: &str) -> Option<&'static str> {
    topic_config(name).map(|config| config.default)
}

/// The items of a list config's value.
pub fn list_items(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty()).collect()
}

/// Checks one topic config name and value.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), MetaError> {
    let config = topic_config(key).ok_or_else(|| MetaError::UnknownConfig { key: key.to_owned() })?;
    let invalid = |reason: String| MetaError::InvalidConfig { key: key.to_owned(), value: value.to_owned(), reason };
    let (min, max) = match config.kind {
        ConfigType::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    let number = || match value.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if config.kind == ConfigType::Int => Err(invalid(format!("must be a whole number from {min} to {max}"))),
        _ => Err(invalid("must be a whole number".into())),
    };
    match config.rule {
        Rule::AtLeast(low) => {
            let n = number()?;
            if n < low {
                return Err(invalid(format!("must be at least {low}")));
            }
        }
        Rule::Between(low, high) => {
            let n = number()?;
            if !(low..=high).contains(&n) {
                return Err(invalid(format!("must be from {low} to {high}")));
            }
        }
        Rule::Level(low, high) => {
            let n = number()?;
            if n != -1 && !(low..=high).contains(&n) {
                return Err(invalid(format!("must be -1 or from {low} to {high}")));
            }
        }
        Rule::Ratio(low, high) => match value.trim().parse::<f64>() {
            Ok(x) if (low..=high).contains(&x) => {}
            _ => return Err(invalid(format!("must be a number from {low} to {high}"))),
        },
        Rule::Boolean => {
            if !value.trim().eq_ignore_ascii_case("true") && !value.trim().eq_ignore_ascii_case("false") {
                return Err(invalid("must be true or false".into()));
            }
        }
        Rule::OneOf(allowed) => {
            if !allowed.contains(&value) {
                return Err(invalid(format!("must be one of {}", allowed.join(", "))));
            }
        }
        Rule::ListOf(allowed) => {
            let items = list_items(value);
            if items.is_empty() || items.iter().any(|item| !allowed.contains(item)) {
                return Err(invalid(format!("must be a comma-separated list of {}", allowed.join(", "))));
            }
        }
        Rule::ThrottledReplicas => {
            let pair = |item: &str| {
                item.split_once(':')
                    .is_some_and(|(p, b)| p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok())
            };
            let items = list_items(value);
            if !(items.is_empty() || items == ["*"] || items.iter().all(|item| pair(item))) {
                return Err(invalid("must be empty, * or partition:broker pairs".into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_by_name_and_value() {
        assert_eq!(validate_topic_config("retention.ms", "-1"), Ok(()));
        assert_eq!(validate_topic_config("cleanup.policy", "compact,delete"), Ok(()));
        assert_eq!(validate_topic_config("segment.bytes", "104857600"), Ok(()));
        assert_eq!(validate_topic_config("min.insync.replicas", "2"), Ok(()));
        assert_eq!(validate_topic_config("leader.replication.throttled.replicas", "0:1,1:2"), Ok(()));
        assert_eq!(validate_topic_config("min.cleanable.dirty.ratio", "0.1"), Ok(()));
        assert_eq!(validate_topic_config("preallocate", "TRUE"), Ok(()));
        for (key, bad) in [
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("segment.bytes", "1000"),
            ("segment.bytes", "4294967296"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("preallocate", "yes"),
            ("compression.gzip.level", "10"),
            ("leader.replication.throttled.replicas", "everyone"),
        ] {
            assert!(matches!(validate_topic_config(key, bad), Err(MetaError::InvalidConfig { .. })), "{key}={bad}");
        }
        assert!(matches!(validate_topic_config("retention.hours", "1"), Err(MetaError::UnknownConfig { .. })));
    }

    #[test]
    fn every_default_is_valid_and_names_are_unique_and_sorted() {
        for config in TOPIC_CONFIGS {
            assert_eq!(validate_topic_config(config.name, config.default), Ok(()), "{}'s default", config.name);
        }
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }
}
