//! The way in to the broker's own handlers: a RabbitMQ command becomes the native request of the
//! same meaning (archived as a native client would send it) and runs through the same handler,
//! rights checks and owner-shard forwarding; the answer is read back, and a [`BrokerError`]
//! becomes the RabbitMQ response code of the same meaning.
//!
//! Runs on the connection's shard. Only control commands come this way (an archive and an
//! unarchive of a small body each); Publish and Deliver take the direct paths in `publish` and
//! `push`. Invariant: every native status maps to exactly one RabbitMQ code ([`code_of`]).

use super::codec::codes;
use crate::protocol::messages::Status;
use crate::shard::error::BrokerError;

pub(super) use crate::wire::native_call as call;

/// The RabbitMQ response code for a native failure.
pub(super) fn code_of(error: &BrokerError) -> u16 {
    match error.status {
        Status::Ok => codes::OK,
        Status::UnknownStream | Status::UnknownTopic | Status::UnknownPartition => {
            codes::STREAM_DOES_NOT_EXIST
        }
        Status::AlreadyExists => codes::STREAM_ALREADY_EXISTS,
        Status::PermissionDenied => codes::ACCESS_REFUSED,
        Status::Unauthenticated
        | Status::InvalidCredentials
        | Status::LoginThrottled
        | Status::UnknownUser => codes::AUTHENTICATION_FAILURE,
        Status::SubscriptionExists => codes::SUBSCRIPTION_ID_ALREADY_EXISTS,
        Status::UnknownSubscription => codes::SUBSCRIPTION_ID_DOES_NOT_EXIST,
        Status::UnknownProducer => codes::PUBLISHER_DOES_NOT_EXIST,
        Status::FrameTooLarge => codes::FRAME_TOO_LARGE,
        Status::BadFrame | Status::UnknownKind | Status::MalformedBody => codes::UNKNOWN_FRAME,
        Status::OffsetOutOfRange => codes::NO_OFFSET,
        Status::StorageFailed | Status::PartitionPoisoned | Status::OutOfSpace | Status::ShuttingDown => {
            codes::STREAM_NOT_AVAILABLE
        }
        Status::Internal => codes::INTERNAL_ERROR,
        _ => codes::PRECONDITION_FAILED,
    }
}
