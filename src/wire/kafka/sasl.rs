//! SASL PLAIN on the Kafka listener: SaslHandshake, then either SaslAuthenticate requests
//! (handshake v1) or one raw size-prefixed token (handshake v0), checked against the broker's
//! argon2 users by the native login (same throttling of failed attempts).
//!
//! Runs on the connection's shard, in the reader (no other request runs before it succeeds).
//! Invariants: `authenticated` is set only by a verified login; a failed authentication answers
//! Kafka's `SASL_AUTHENTICATION_FAILED`, after which only a new handshake is accepted (any other
//! request closes the connection).

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::Answer;
use super::errors::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};
use super::state::Conn;
use crate::protocol::messages::LoginRequest;
use crate::server::admin;

/// The one mechanism served.
const PLAIN: &str = "PLAIN";

/// SaslHandshake: PLAIN only.
pub(crate) fn handshake(conn: &Conn, version: i16, request: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mechanisms = vec![StrBytes::from_static_str(PLAIN)];
    if request.mechanism.as_str() != PLAIN {
        return SaslHandshakeResponse::default()
            .with_error_code(UNSUPPORTED_SASL_MECHANISM)
            .with_mechanisms(mechanisms);
    }
    conn.handshaken.set(true);
    conn.raw_sasl_next.set(version == 0);
    SaslHandshakeResponse::default().with_mechanisms(mechanisms)
}

/// SaslAuthenticate with a PLAIN token. Returns the answer and whether it succeeded.
pub(crate) async fn authenticate(
    conn: &Conn,
    _version: i16,
    request: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let failed = |code: i16, message: String| {
        let mut response = SaslAuthenticateResponse::default().with_error_code(code);
        response.error_message = Some(StrBytes::from_string(message));
        (response, false)
    };
    if !conn.handshaken.get() {
        return failed(ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake".to_string());
    }
    match login(conn, &request.auth_bytes).await {
        Ok(()) => (SaslAuthenticateResponse::default(), true),
        Err(message) => failed(SASL_AUTHENTICATION_FAILED, message),
    }
}

/// The raw token after a v0 handshake: an empty frame back on success, a close on failure.
pub(crate) async fn raw_token(conn: &Conn, token: Bytes, answer: Answer) {
    match login(conn, &token).await {
        Ok(()) => {
            let _ = answer.send(Some(0_u32.to_be_bytes().to_vec()));
        }
        Err(message) => {
            tracing::debug!(shard = conn.shard.id, %message, "kafka SASL (v0) failed");
            let _ = answer.send(None);
        }
    }
}

/// Checks a PLAIN token (`authzid NUL user NUL password`) with the native login.
async fn login(conn: &Conn, token: &[u8]) -> Result<(), String> {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a PLAIN token is authzid NUL user NUL password".to_string());
    };
    let (Ok(authzid), Ok(user), Ok(password)) =
        (std::str::from_utf8(authzid), std::str::from_utf8(user), std::str::from_utf8(password))
    else {
        return Err("the PLAIN token is not UTF-8".to_string());
    };
    if !authzid.is_empty() && authzid != user {
        return Err("acting as another user (authzid) is not supported".to_string());
    }
    let request = LoginRequest { user: user.to_string(), password: password.to_string() };
    match admin::login(&conn.shard, &conn.session, request).await {
        Ok(_) => {
            conn.authenticated.set(true);
            Ok(())
        }
        Err(error) => Err(error.message.clone()),
    }
}
