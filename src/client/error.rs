//! The one error type of the client: what the server refused, what the network did, and what the
//! client refused locally.
//!
//! Plain data, `Send + Sync`; created on the connection's reader task or on the calling task.
//! Invariant: a [`ClientError::Server`] carries the status the server sent (never `Ok`) and its
//! message verbatim, so `Display` reads like `UnknownStream(20): stream "x" does not exist`.

use std::fmt;

use crate::protocol::messages::Status;

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error status; `message` is its [`ErrorBody`] text.
    ///
    /// [`ErrorBody`]: crate::protocol::messages::ErrorBody
    Server {
        /// The status code (never [`Status::Ok`]).
        status: Status,
        /// The server's explanation.
        message: String,
    },
    /// A socket operation failed (the message names the operation and address).
    Io(std::io::Error),
    /// The server sent something the client cannot accept: a bad frame header, a body that
    /// fails validation, a response of the wrong kind, inconsistent lengths.
    Protocol(String),
    /// The connection was lost (or could not be re-established) before the response arrived.
    /// Whether the server acted on the request is unknown.
    Disconnected,
    /// No response within the request timeout. Whether the server acted on it is unknown.
    Timeout,
    /// A connection string could not be parsed (the text says why).
    InvalidConnectionString(String),
    /// The client refused to send a request: empty or malformed batches, a frame too large for
    /// the format, an unknown shard.
    InvalidRequest(String),
}

impl ClientError {
    /// The server's status code, for [`ClientError::Server`].
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request's fate is unknown because the connection failed or the answer was
    /// late ([`Disconnected`](Self::Disconnected), [`Timeout`](Self::Timeout),
    /// [`Io`](Self::Io)): a retry may repeat it.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, ClientError::Disconnected | ClientError::Timeout | ClientError::Io(_))
    }

    /// Whether a newer instance of this named producer declared the same name: the server
    /// fenced this one off (`ProducerFenced`). Retrying cannot help; the producer must stop.
    pub fn is_producer_fenced(&self) -> bool {
        self.status() == Some(Status::ProducerFenced)
    }

    /// Whether another producer holds the topic exclusively (`ProducerBusy`).
    pub fn is_producer_busy(&self) -> bool {
        self.status() == Some(Status::ProducerBusy)
    }

    /// An I/O error with what was being done and where, keeping its kind.
    pub(crate) fn io(what: impl fmt::Display, error: std::io::Error) -> Self {
        ClientError::Io(std::io::Error::new(error.kind(), format!("{what}: {error}")))
    }
}

/// A copy for every party that must hear of one failure (a producer reports a batch's error to
/// its confirmation callback and to its caller). An I/O error is copied as its kind and text.
impl Clone for ClientError {
    fn clone(&self) -> Self {
        match self {
            ClientError::Server { status, message } => {
                ClientError::Server { status: *status, message: message.clone() }
            }
            ClientError::Io(error) => ClientError::Io(std::io::Error::new(error.kind(), error.to_string())),
            ClientError::Protocol(reason) => ClientError::Protocol(reason.clone()),
            ClientError::Disconnected => ClientError::Disconnected,
            ClientError::Timeout => ClientError::Timeout,
            ClientError::InvalidConnectionString(reason) => {
                ClientError::InvalidConnectionString(reason.clone())
            }
            ClientError::InvalidRequest(reason) => ClientError::InvalidRequest(reason.clone()),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Server { status, message } => write!(f, "{status}: {message}"),
            ClientError::Io(error) => write!(f, "{error}"),
            ClientError::Protocol(reason) => write!(f, "protocol error: {reason}"),
            ClientError::Disconnected => write!(f, "the connection to the server was lost"),
            ClientError::Timeout => write!(f, "the server did not answer within the request timeout"),
            ClientError::InvalidConnectionString(reason) => write!(f, "invalid connection string: {reason}"),
            ClientError::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(error) => Some(error),
            _ => None,
        }
    }
}

/// A batch that could not be built is a request the client refuses to send.
impl From<crate::protocol::batch::BatchError> for ClientError {
    fn from(error: crate::protocol::batch::BatchError) -> Self {
        ClientError::InvalidRequest(format!("batch: {error}"))
    }
}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        ClientError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_show_the_status_name_and_value() {
        let error = ClientError::Server {
            status: Status::UnknownStream,
            message: "stream \"x\" does not exist".into(),
        };
        assert_eq!(error.to_string(), "UnknownStream(20): stream \"x\" does not exist");
        assert_eq!(error.status(), Some(Status::UnknownStream));
        assert!(!error.is_connection_error());
        assert!(ClientError::Timeout.is_connection_error());
        assert_eq!(ClientError::Disconnected.status(), None);
        let io =
            ClientError::io("connecting to h:1", std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(io.to_string().starts_with("connecting to h:1: "), "{io}");
        let copy = io.clone();
        assert_eq!((copy.to_string(), copy.is_connection_error()), (io.to_string(), true));
        assert_eq!(error.clone().status(), Some(Status::UnknownStream));
    }
}
