//! Kafka error codes, and the one mapping from a native failure to the Kafka code of the same
//! meaning. Pure; runs wherever a handler builds its answer. Invariant: every native status maps
//! to exactly one Kafka code ([`code_of`]), and codes are Kafka's published numbers.

use crate::protocol::messages::Status;
use crate::shard::error::BrokerError;

/// `UNKNOWN_SERVER_ERROR`.
pub(crate) const UNKNOWN_SERVER_ERROR: i16 = -1;
/// `OFFSET_OUT_OF_RANGE`.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
/// `CORRUPT_MESSAGE`.
pub(crate) const CORRUPT_MESSAGE: i16 = 2;
/// `UNKNOWN_TOPIC_OR_PARTITION`.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// `NOT_LEADER_OR_FOLLOWER`.
pub(crate) const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// `COORDINATOR_NOT_AVAILABLE`.
pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// `INVALID_TOPIC_EXCEPTION`.
pub(crate) const INVALID_TOPIC: i16 = 17;
/// `RECORD_LIST_TOO_LARGE`.
pub(crate) const RECORD_LIST_TOO_LARGE: i16 = 18;
/// `ILLEGAL_GENERATION`.
pub(crate) const ILLEGAL_GENERATION: i16 = 22;
/// `INCONSISTENT_GROUP_PROTOCOL`.
pub(crate) const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// `UNKNOWN_MEMBER_ID`.
pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
/// `REBALANCE_IN_PROGRESS`.
pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
/// `TOPIC_AUTHORIZATION_FAILED`.
pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// `GROUP_AUTHORIZATION_FAILED`.
pub(crate) const GROUP_AUTHORIZATION_FAILED: i16 = 30;
/// `UNSUPPORTED_SASL_MECHANISM`.
pub(crate) const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// `ILLEGAL_SASL_STATE`.
pub(crate) const ILLEGAL_SASL_STATE: i16 = 34;
/// `TOPIC_ALREADY_EXISTS`.
pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
/// `INVALID_REQUEST`.
pub(crate) const INVALID_REQUEST: i16 = 42;
/// `OUT_OF_ORDER_SEQUENCE_NUMBER`.
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// `KAFKA_STORAGE_ERROR`.
pub(crate) const KAFKA_STORAGE_ERROR: i16 = 56;
/// `SASL_AUTHENTICATION_FAILED`.
pub(crate) const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// `UNKNOWN_PRODUCER_ID`.
pub(crate) const UNKNOWN_PRODUCER_ID: i16 = 59;
/// `GROUP_ID_NOT_FOUND`.
pub(crate) const GROUP_ID_NOT_FOUND: i16 = 69;
/// `MEMBER_ID_REQUIRED`.
pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
/// `INVALID_RECORD`.
pub(crate) const INVALID_RECORD: i16 = 87;
/// `THROTTLING_QUOTA_EXCEEDED` stands in for the broker's own back-pressure refusals.
pub(crate) const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
/// `PRODUCER_FENCED`.
pub(crate) const PRODUCER_FENCED: i16 = 90;

/// The Kafka error code for a native failure.
pub(crate) fn code_of(error: &BrokerError) -> i16 {
    match error.status {
        Status::Ok => 0,
        Status::UnknownStream | Status::UnknownTopic | Status::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
        Status::AlreadyExists => TOPIC_ALREADY_EXISTS,
        Status::InvalidName => INVALID_TOPIC,
        Status::PermissionDenied => TOPIC_AUTHORIZATION_FAILED,
        Status::Unauthenticated
        | Status::InvalidCredentials
        | Status::LoginThrottled
        | Status::UnknownUser => SASL_AUTHENTICATION_FAILED,
        Status::UnknownGroup => GROUP_ID_NOT_FOUND,
        Status::UnknownMember => UNKNOWN_MEMBER_ID,
        Status::FrameTooLarge => RECORD_LIST_TOO_LARGE,
        Status::BadFrame | Status::UnknownKind | Status::MalformedBody | Status::InvalidArgument => {
            INVALID_REQUEST
        }
        Status::InvalidBatch => CORRUPT_MESSAGE,
        Status::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        Status::StorageFailed | Status::PartitionPoisoned | Status::OutOfSpace => KAFKA_STORAGE_ERROR,
        Status::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
        Status::TooManyInFlight | Status::TooManyConnections => THROTTLING_QUOTA_EXCEEDED,
        Status::ProducerFenced => PRODUCER_FENCED,
        Status::UnknownProducer => UNKNOWN_PRODUCER_ID,
        Status::SequenceStraddle | Status::ProducerBusy => OUT_OF_ORDER_SEQUENCE_NUMBER,
        _ => UNKNOWN_SERVER_ERROR,
    }
}
