//! Authorized operations (KIP-430): what Metadata, DescribeCluster,
//! DescribeGroups, ConsumerGroupDescribe (when asked) and
//! DescribeTopicPartitions (always) report the caller may do, as
//! bit fields of Kafka's ACL operation codes. With no authorizer yet, every
//! operation Kafka defines for the resource type is allowed, and is
//! reported so; a field the request did not ask for is `NOT_ASKED`.

/// Kafka's value for "not requested" (`-2147483648`).
pub const NOT_ASKED: i32 = i32::MIN;

// Kafka's `AclOperation` codes.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

fn bits(operations: &[u8]) -> i32 {
    operations.iter().fold(0, |field, operation| field | 1 << operation)
}

/// A topic's operations, if `asked`.
pub fn topic(asked: bool) -> i32 {
    let all = [READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS];
    if asked {
        bits(&all)
    } else {
        NOT_ASKED
    }
}

/// The cluster's operations, if `asked`.
pub fn cluster(asked: bool) -> i32 {
    let all = [CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE];
    if asked {
        bits(&all)
    } else {
        NOT_ASKED
    }
}

/// A group's operations, if `asked`.
pub fn group(asked: bool) -> i32 {
    if asked {
        bits(&[READ, DELETE, DESCRIBE])
    } else {
        NOT_ASKED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_kafkas_bits_or_not_asked() {
        // As a Kafka broker with no ACLs reports them to a super user.
        assert_eq!(topic(true), 3576, "bits 3-8, 10 and 11");
        assert_eq!(group(true), (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(cluster(true), 0b1_1111_1010_0000);
        assert_eq!((topic(false), cluster(false), group(false)), (NOT_ASKED, NOT_ASKED, NOT_ASKED));
    }
}
