//! Response codes of the RabbitMQ Streams protocol (PROTOCOL.adoc's table, and the Java
//! client's `Constants` past it). Constants only, used on whichever core handles the connection.

/// Success.
pub const OK: u16 = 1;
/// The stream does not exist.
pub const STREAM_DOES_NOT_EXIST: u16 = 2;
/// The subscription id is in use on this connection.
pub const SUBSCRIPTION_ID_ALREADY_EXISTS: u16 = 3;
/// No subscription with this id on this connection.
pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: u16 = 4;
/// The stream exists already.
pub const STREAM_ALREADY_EXISTS: u16 = 5;
/// The stream exists but cannot serve (also the MetadataUpdate code of a deleted stream).
pub const STREAM_NOT_AVAILABLE: u16 = 6;
/// The SASL mechanism is not offered.
pub const SASL_MECHANISM_NOT_SUPPORTED: u16 = 7;
/// Wrong user or password.
pub const AUTHENTICATION_FAILURE: u16 = 8;
/// The SASL exchange failed.
pub const SASL_ERROR: u16 = 9;
/// The server sends a SASL challenge.
pub const SASL_CHALLENGE: u16 = 10;
/// The user may connect from the loopback interface only.
pub const AUTHENTICATION_FAILURE_LOOPBACK: u16 = 11;
/// The virtual host does not exist or is refused.
pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 12;
/// The frame's key (or key and version) is not one the peer knows.
pub const UNKNOWN_FRAME: u16 = 13;
/// The frame is larger than the negotiated maximum.
pub const FRAME_TOO_LARGE: u16 = 14;
/// The server failed.
pub const INTERNAL_ERROR: u16 = 15;
/// The user lacks the permission.
pub const ACCESS_REFUSED: u16 = 16;
/// The request is not valid in this state or with these arguments.
pub const PRECONDITION_FAILED: u16 = 17;
/// No publisher with this id on this connection.
pub const PUBLISHER_DOES_NOT_EXIST: u16 = 18;
/// No offset stored for this reference (QueryOffset). The Java client calls it `NO_OFFSET`.
pub const OFFSET_NOT_FOUND: u16 = 19;
/// The same code under the Java client's and RabbitMQ's name.
pub const NO_OFFSET: u16 = OFFSET_NOT_FOUND;
/// A re-authentication tried another SASL mechanism (RabbitMQ 3.13+).
pub const SASL_CANNOT_CHANGE_MECHANISM: u16 = 20;
/// A re-authentication tried another user name (RabbitMQ 3.13+).
pub const SASL_CANNOT_CHANGE_USERNAME: u16 = 21;
