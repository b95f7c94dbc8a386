//! Connection set-up: PeerProperties, SASL (PLAIN against the broker's argon2 users), Tune,
//! Open (virtual host `/` only) and ExchangeCommandVersions.
//!
//! Runs on the connection's shard, in its reader. Invariants: Tune is sent only after SASL
//! succeeded; the negotiated frame size and heartbeat are the smaller non-zero values of both
//! sides; a failed login counts against `--max-failed-logins` and the per-address throttle
//! exactly as a native login does (the same handler runs).

use super::codec::{codes, keys};
use super::encode;
use super::native::code_of;
use super::state::Conn;
use crate::protocol::messages::LoginRequest;
use crate::server::admin;

/// The only virtual host: RabbitMQ's default.
pub(super) const VIRTUAL_HOST: &str = "/";

/// Heartbeat the server proposes (seconds), unless `--idle-timeout` is shorter.
const HEARTBEAT_SECONDS: u32 = 60;

pub(super) fn peer_properties(conn: &Conn, correlation: u32) {
    let version = env!("CARGO_PKG_VERSION");
    let properties = [
        ("product", "ringbroker"),
        ("version", version),
        ("platform", "Rust"),
        ("copyright", "ringbroker authors"),
        ("information", "ringbroker: a thread-per-core streaming broker speaking RabbitMQ Streams"),
        ("cluster_name", "ringbroker"),
    ];
    conn.send(encode::peer_properties_response(correlation, codes::OK, &properties));
}

pub(super) fn sasl_handshake(conn: &Conn, correlation: u32) {
    conn.send(encode::sasl_handshake_response(correlation, codes::OK, &["PLAIN"]));
}

/// PLAIN: `[authzid] NUL user NUL password`. Success sends the server's Tune.
pub(super) async fn sasl_authenticate(
    conn: &Conn,
    correlation: u32,
    mechanism: &str,
    response: &[u8],
) -> Result<(), String> {
    if mechanism != "PLAIN" {
        conn.send(encode::sasl_authenticate_response(correlation, codes::SASL_MECHANISM_NOT_SUPPORTED, None));
        return Ok(());
    }
    let mut parts = response.split(|&byte| byte == 0);
    let (Some(_), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        conn.send(encode::sasl_authenticate_response(correlation, codes::SASL_ERROR, None));
        return Ok(());
    };
    let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password)) else {
        conn.send(encode::sasl_authenticate_response(correlation, codes::SASL_ERROR, None));
        return Ok(());
    };
    let request = LoginRequest { user: user.to_string(), password: password.to_string() };
    match admin::login(&conn.shard, &conn.session, request).await {
        Ok(_) => {
            conn.authenticated.set(true);
            conn.send(encode::sasl_authenticate_response(correlation, codes::OK, None));
            let idle = conn.shard.config.idle_timeout.as_secs();
            let heartbeat = match idle {
                0 => HEARTBEAT_SECONDS,
                idle => HEARTBEAT_SECONDS.min(u32::try_from(idle / 2).unwrap_or(u32::MAX).max(1)),
            };
            conn.send(encode::tune(conn.frame_max.get(), heartbeat));
            Ok(())
        }
        Err(error) => {
            conn.send(encode::sasl_authenticate_response(correlation, code_of(&error), None));
            if conn.session.close_after_reply.get() {
                conn.send(encode::close(0, codes::AUTHENTICATION_FAILURE, &error.message));
                return Err(error.message);
            }
            Ok(())
        }
    }
}

/// The client's Tune: the smaller non-zero values win.
pub(super) fn tune(conn: &Conn, frame_max: u32, heartbeat: u32) {
    let ours = conn.frame_max.get();
    if frame_max != 0 {
        // Never below what a Publish of one small message needs.
        conn.frame_max.set(ours.min(frame_max.max(4096)));
    }
    let idle = conn.shard.config.idle_timeout.as_secs();
    let ours = if idle == 0 { HEARTBEAT_SECONDS } else { HEARTBEAT_SECONDS.min((idle / 2).max(1) as u32) };
    conn.heartbeat.set(if heartbeat == 0 { 0 } else { heartbeat.min(ours) });
}

pub(super) fn open(conn: &Conn, correlation: u32, virtual_host: &str) {
    if !conn.authenticated.get() {
        conn.send(encode::open_response(correlation, codes::AUTHENTICATION_FAILURE, &[]));
        return;
    }
    if virtual_host != VIRTUAL_HOST {
        conn.send(encode::open_response(correlation, codes::VIRTUAL_HOST_ACCESS_FAILURE, &[]));
        return;
    }
    conn.opened.set(true);
    let host = conn.shard.config.rabbitmq_host();
    let port = conn.local_port.to_string();
    let properties = [("advertised_host", host.as_str()), ("advertised_port", port.as_str())];
    conn.send(encode::open_response(correlation, codes::OK, &properties));
}

pub(super) fn exchange_command_versions(conn: &Conn, correlation: u32, versions: &[(u16, u16, u16)]) {
    let ours = encode::SERVER_COMMAND_VERSIONS;
    let deliver =
        |list: &[(u16, u16, u16)]| list.iter().find(|(key, _, _)| *key == keys::DELIVER).map(|v| v.2);
    if let (Some(theirs), Some(mine)) = (deliver(versions), deliver(ours)) {
        conn.shared.deliver_version.set(theirs.min(mine).max(1));
    }
    conn.send(encode::exchange_command_versions_response(correlation, codes::OK, ours));
}
