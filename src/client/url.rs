//! Connection strings: `ringbroker://user:password@host:port?option=value&...`.
//!
//! Pure parsing and printing, no I/O; used on whatever thread builds a [`super::Client`].
//!
//! Invariants: a parsed [`ConnectionString`] has a non-empty host and user, every option within
//! its range, and no option the client does not know (a typo must not silently fall back to a
//! default). Neither [`Display`](fmt::Display) nor [`Debug`] ever prints the password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::error::ClientError;
use super::{
    FRAME_BYTES_MAX_DEFAULT, IN_FLIGHT_MAX_DEFAULT, RECONNECT_INTERVAL_DEFAULT_MS, RECONNECT_RETRIES_DEFAULT,
    REQUEST_TIMEOUT_DEFAULT_MS,
};

/// The URL scheme of a connection string.
pub const SCHEME: &str = "ringbroker://";

/// The port used when a connection string names none.
pub const PORT_DEFAULT: u16 = 7720;

/// The smallest response frame limit accepted (a frame header plus a small body).
const FRAME_BYTES_MAX_MIN: u64 = 4096;

/// The largest `max_in_flight` accepted.
const IN_FLIGHT_MAX_LIMIT: u64 = 1 << 20;

/// Tuning of one client connection; every field has a default (see [`ClientOptions::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long a request may wait for its response (`timeout_ms`, default 30 s). A long poll
    /// waits this plus its `max_wait_ms`. Also bounds each connection attempt.
    pub timeout: Duration,
    /// How many times a lost connection is re-established before requests fail
    /// (`reconnect_retries`, default 5). The first connection is attempted once.
    pub reconnect_retries: u32,
    /// The wait before the first reconnection attempt, doubling after each failure up to eight
    /// times this (`reconnect_interval_ms`, default 200 ms).
    pub reconnect_interval: Duration,
    /// The largest response frame accepted (`max_frame_bytes`, default 64 MiB); a larger one is
    /// a protocol error and closes the connection.
    pub max_frame_bytes: usize,
    /// Requests one client may have awaiting responses (`max_in_flight`, default 1024); more
    /// wait for a slot.
    pub max_in_flight: usize,
    /// Speak TLS (`tls=true`, default off): the server must run with `--tls-cert` / `--tls-key`.
    pub tls: bool,
    /// PEM file of the certificate authorities to trust (`ca=FILE`, percent-decoded; needs
    /// `tls=true`). Without it the client trusts the bundled Mozilla roots (`webpki-roots`).
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (`tls_domain=NAME`; needs `tls=true`).
    /// Default: the host of the connection string (also for shard-direct connections, which go
    /// to the address the server advertises).
    pub tls_domain: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(REQUEST_TIMEOUT_DEFAULT_MS),
            reconnect_retries: RECONNECT_RETRIES_DEFAULT,
            reconnect_interval: Duration::from_millis(RECONNECT_INTERVAL_DEFAULT_MS),
            max_frame_bytes: FRAME_BYTES_MAX_DEFAULT,
            max_in_flight: IN_FLIGHT_MAX_DEFAULT,
            tls: false,
            tls_ca: None,
            tls_domain: None,
        }
    }
}

/// Where a client connects, as whom, and how: a parsed `ringbroker://` URL.
///
/// ```
/// use ringbroker::client::ConnectionString;
/// let url: ConnectionString = "ringbroker://app:s%40cret@localhost:7720?timeout_ms=5000".parse()?;
/// assert_eq!((url.user.as_str(), url.password.as_str()), ("app", "s@cret"));
/// assert_eq!(url.address(), "localhost:7720");
/// assert_eq!(url.to_string(), "ringbroker://app:****@localhost:7720?timeout_ms=5000");
/// # Ok::<(), ringbroker::client::ClientError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name (percent-decoded).
    pub user: String,
    /// Password (percent-decoded).
    pub password: String,
    /// Connection tuning.
    pub options: ClientOptions,
}

impl ConnectionString {
    /// Parses `ringbroker://user:password@host[:port][?options]`. User and password are
    /// percent-decoded; an IPv6 host goes in brackets; options are `timeout_ms`,
    /// `reconnect_retries`, `reconnect_interval_ms`, `max_frame_bytes`, `max_in_flight`, `tls`,
    /// `ca` and `tls_domain`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| invalid(format!("must start with `{SCHEME}`")))?;
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(invalid("a connection string has no path".to_string()));
        }
        let (user_info, host_port) =
            authority.rsplit_once('@').ok_or_else(|| invalid("missing `user:password@`".to_string()))?;
        let (user, password) = user_info
            .split_once(':')
            .ok_or_else(|| invalid("missing `:password` after the user".to_string()))?;
        let user = percent_decode(user)?;
        if user.is_empty() {
            return Err(invalid("the user is empty".to_string()));
        }
        let (host, port) = parse_host_port(host_port, PORT_DEFAULT)?;
        let mut url =
            Self { host, port, user, password: percent_decode(password)?, options: Default::default() };
        if let Some(query) = query {
            url.options = parse_options(query)?;
        }
        Ok(url)
    }

    /// A connection string for `address` (`host:port`, `[v6]:port`, or a bare host) with
    /// default options.
    pub fn new(address: &str, user: &str, password: &str) -> Result<Self, ClientError> {
        let (host, port) = parse_host_port(address, PORT_DEFAULT)?;
        if user.is_empty() {
            return Err(invalid("the user is empty".to_string()));
        }
        Ok(Self {
            host,
            port,
            user: user.to_string(),
            password: password.to_string(),
            options: Default::default(),
        })
    }

    /// `host:port` to connect to (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        format_host_port(&self.host, self.port)
    }

    /// The name a TLS server certificate must carry: `tls_domain`, else the host.
    pub fn tls_server_name(&self) -> &str {
        self.options.tls_domain.as_deref().unwrap_or(&self.host)
    }
}

impl FromStr for ConnectionString {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Prints the URL with the password replaced by `****` and only the options that differ from
/// their defaults.
impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}:****@{}", percent_encode(&self.user), self.address())?;
        let defaults = ClientOptions::default();
        let options = &self.options;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if options.timeout != defaults.timeout {
            pairs.push(("timeout_ms", options.timeout.as_millis().to_string()));
        }
        if options.reconnect_retries != defaults.reconnect_retries {
            pairs.push(("reconnect_retries", options.reconnect_retries.to_string()));
        }
        if options.reconnect_interval != defaults.reconnect_interval {
            pairs.push(("reconnect_interval_ms", options.reconnect_interval.as_millis().to_string()));
        }
        if options.max_frame_bytes != defaults.max_frame_bytes {
            pairs.push(("max_frame_bytes", options.max_frame_bytes.to_string()));
        }
        if options.max_in_flight != defaults.max_in_flight {
            pairs.push(("max_in_flight", options.max_in_flight.to_string()));
        }
        if options.tls {
            pairs.push(("tls", "true".to_string()));
        }
        if let Some(ca) = &options.tls_ca {
            pairs.push(("ca", percent_encode_path(&ca.to_string_lossy())));
        }
        if let Some(domain) = &options.tls_domain {
            pairs.push(("tls_domain", percent_encode(domain)));
        }
        for (index, (key, value)) in pairs.iter().enumerate() {
            write!(f, "{}{key}={value}", if index == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// Like [`Display`](fmt::Display): never shows the password.
impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"****")
            .field("options", &self.options)
            .finish()
    }
}

fn invalid(reason: String) -> ClientError {
    ClientError::InvalidConnectionString(reason)
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` (then with `port_default`).
pub(crate) fn parse_host_port(text: &str, port_default: u16) -> Result<(String, u16), ClientError> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| invalid(format!("unclosed `[` in address `{text}`")))?;
        match after {
            "" => (host, None),
            _ => {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid(format!("expected `:port` after `]` in `{text}`")))?;
                (host, Some(port))
            }
        }
    } else {
        match text.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(invalid(format!("IPv6 address `{text}` needs brackets: `[host]:port`")))
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(format!("no host in `{text}`")));
    }
    let port = match port {
        None => port_default,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(invalid(format!("invalid port `{port}` in `{text}`"))),
        },
    };
    Ok((host.to_string(), port))
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `key=value&key=value`; unknown, repeated or out-of-range options are errors.
fn parse_options(query: &str) -> Result<ClientOptions, ClientError> {
    let mut options = ClientOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| invalid(format!("option `{pair}` needs `=value`")))?;
        if seen.contains(&key) {
            return Err(invalid(format!("option `{key}` given twice")));
        }
        seen.push(key);
        match key {
            "timeout_ms" => options.timeout = Duration::from_millis(number(key, value, 1)?),
            "reconnect_retries" => {
                options.reconnect_retries = u32::try_from(number(key, value, 0)?)
                    .map_err(|_| invalid(format!("option `{key}` is too large")))?
            }
            "reconnect_interval_ms" => {
                options.reconnect_interval = Duration::from_millis(number(key, value, 0)?)
            }
            "max_frame_bytes" => {
                options.max_frame_bytes =
                    as_usize(key, bounded(key, value, FRAME_BYTES_MAX_MIN, u32::MAX.into())?)?
            }
            "max_in_flight" => {
                options.max_in_flight = as_usize(key, bounded(key, value, 1, IN_FLIGHT_MAX_LIMIT)?)?
            }
            "tls" => {
                options.tls = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(invalid(format!("option `tls` is `true` or `false`, got `{value}`"))),
                }
            }
            "ca" => {
                let path = percent_decode(value)?;
                if path.is_empty() {
                    return Err(invalid("option `ca` needs a file name".to_string()));
                }
                options.tls_ca = Some(PathBuf::from(path));
            }
            "tls_domain" => {
                let domain = percent_decode(value)?;
                if domain.is_empty() {
                    return Err(invalid("option `tls_domain` needs a name".to_string()));
                }
                options.tls_domain = Some(domain);
            }
            _ => {
                return Err(invalid(format!(
                    "unknown option `{key}` (known: timeout_ms, reconnect_retries, reconnect_interval_ms, \
                     max_frame_bytes, max_in_flight, tls, ca, tls_domain)"
                )))
            }
        }
    }
    if !options.tls && (options.tls_ca.is_some() || options.tls_domain.is_some()) {
        return Err(invalid("options `ca` and `tls_domain` need `tls=true`".to_string()));
    }
    debug_assert!(options.max_frame_bytes as u64 >= FRAME_BYTES_MAX_MIN && options.max_in_flight >= 1);
    Ok(options)
}

/// A decimal option value of at least `min`.
fn number(key: &str, value: &str, min: u64) -> Result<u64, ClientError> {
    match value.parse::<u64>() {
        Ok(number) if number >= min => Ok(number),
        _ => Err(invalid(format!("option `{key}` needs a whole number of at least {min}, got `{value}`"))),
    }
}

/// A decimal option value within `min..=max`.
fn bounded(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ClientError> {
    let number = number(key, value, min)?;
    if number > max {
        return Err(invalid(format!("option `{key}` may be at most {max}, got {number}")));
    }
    Ok(number)
}

fn as_usize(key: &str, value: u64) -> Result<usize, ClientError> {
    usize::try_from(value).map_err(|_| invalid(format!("option `{key}` is too large")))
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, ClientError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3).and_then(|hex| std::str::from_utf8(hex).ok());
            let byte = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let byte = byte.ok_or_else(|| invalid("a `%` escape needs two hex digits".to_string()))?;
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("a percent-decoded user or password is not UTF-8".to_string()))
}

/// Like [`percent_encode`], but keeps `/` so file names stay readable.
fn percent_encode_path(text: &str) -> String {
    percent_encode(text).replace("%2F", "/")
}

/// Escapes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_connection_string() {
        let url = ConnectionString::parse(
            "ringbroker://al%20ice:p%40ss%3Aw0rd@broker.example:7800?timeout_ms=1500&reconnect_retries=0\
             &reconnect_interval_ms=50&max_frame_bytes=1048576&max_in_flight=8",
        )
        .expect("parse");
        assert_eq!(url.user, "al ice");
        assert_eq!(url.password, "p@ss:w0rd");
        assert_eq!((url.host.as_str(), url.port), ("broker.example", 7800));
        assert_eq!(url.options.timeout, Duration::from_millis(1500));
        assert_eq!(url.options.reconnect_retries, 0);
        assert_eq!(url.options.reconnect_interval, Duration::from_millis(50));
        assert_eq!(url.options.max_frame_bytes, 1 << 20);
        assert_eq!(url.options.max_in_flight, 8);
    }

    #[test]
    fn defaults_ipv6_and_raw_special_characters() {
        let url: ConnectionString = "ringbroker://root:a:b@c@[::1]".parse().expect("parse");
        assert_eq!((url.user.as_str(), url.password.as_str()), ("root", "a:b@c"));
        assert_eq!((url.host.as_str(), url.port), ("::1", PORT_DEFAULT));
        assert_eq!(url.address(), "[::1]:7720");
        assert_eq!(url.options, ClientOptions::default());
        let url: ConnectionString =
            "ringbroker://u:@127.0.0.1:9/".parse().expect("trailing slash, empty password");
        assert_eq!((url.password.as_str(), url.address().as_str()), ("", "127.0.0.1:9"));
    }

    #[test]
    fn display_and_debug_hide_the_password_and_round_trip() {
        let url = ConnectionString::parse("ringbroker://a%2Fb:topsecret@h:1?max_in_flight=3").expect("parse");
        let shown = url.to_string();
        assert_eq!(shown, "ringbroker://a%2Fb:****@h:1?max_in_flight=3");
        assert!(!format!("{url:?}").contains("topsecret"));
        let again = ConnectionString::parse(&shown).expect("reparse");
        assert_eq!((again.user.as_str(), again.options.max_in_flight), ("a/b", 3));
        let plain = ConnectionString::new("localhost", "ringbroker", "pw").expect("new");
        assert_eq!(plain.to_string(), "ringbroker://ringbroker:****@localhost:7720");
    }

    #[test]
    fn tls_options_parse_print_and_round_trip() {
        let url = ConnectionString::parse(
            "ringbroker://u:p@10.0.0.5:7720?tls=true&ca=/etc/ring%20broker/ca.pem&tls_domain=broker.example",
        )
        .expect("parse");
        assert!(url.options.tls);
        assert_eq!(url.options.tls_ca, Some(PathBuf::from("/etc/ring broker/ca.pem")));
        assert_eq!(url.tls_server_name(), "broker.example");
        let shown = url.to_string();
        assert_eq!(
            shown,
            "ringbroker://u:****@10.0.0.5:7720?tls=true&ca=/etc/ring%20broker/ca.pem&tls_domain=broker.example"
        );
        assert_eq!(ConnectionString::parse(&shown).expect("reparse").options, url.options);
        let plain = ConnectionString::parse("ringbroker://u:p@localhost?tls=true").expect("parse");
        assert_eq!((plain.options.tls_ca.as_ref(), plain.tls_server_name()), (None, "localhost"));
        let off = ConnectionString::parse("ringbroker://u:p@h?tls=false").expect("parse");
        assert_eq!(off.options, ClientOptions::default());
    }

    #[test]
    fn refuses_bad_strings() {
        for bad in [
            "http://u:p@h:1",
            "ringbroker://h:1",
            "ringbroker://u@h:1",
            "ringbroker://:p@h:1",
            "ringbroker://u:p@:1",
            "ringbroker://u:p@h:0",
            "ringbroker://u:p@h:70000",
            "ringbroker://u:p@h:x",
            "ringbroker://u:p@::1:7720",
            "ringbroker://u:p@[::1:7720",
            "ringbroker://u:p@h:1/path",
            "ringbroker://u:p%4@h:1",
            "ringbroker://u:p%ZZ@h:1",
            "ringbroker://u:p%FF@h:1",
            "ringbroker://u:p@h:1?timeout_ms=0",
            "ringbroker://u:p@h:1?timeout_ms=abc",
            "ringbroker://u:p@h:1?timeout=5",
            "ringbroker://u:p@h:1?timeout_ms",
            "ringbroker://u:p@h:1?timeout_ms=1&timeout_ms=2",
            "ringbroker://u:p@h:1?max_frame_bytes=100",
            "ringbroker://u:p@h:1?max_in_flight=0",
            "ringbroker://u:p@h:1?max_in_flight=2000000",
            "ringbroker://u:p@h:1?max_frame_bytes=5000000000",
            "ringbroker://u:p@h:1?reconnect_retries=99999999999",
        ] {
            match ConnectionString::parse(bad) {
                Err(ClientError::InvalidConnectionString(_)) => {}
                other => panic!("{bad} gave {other:?}"),
            }
        }
        for bad in [
            "ringbroker://u:p@h:1?tls=yes",
            "ringbroker://u:p@h:1?ca=/tmp/ca.pem",
            "ringbroker://u:p@h:1?tls=false&tls_domain=x",
            "ringbroker://u:p@h:1?tls=true&ca=",
            "ringbroker://u:p@h:1?tls=true&tls_domain=",
        ] {
            match ConnectionString::parse(bad) {
                Err(ClientError::InvalidConnectionString(_)) => {}
                other => panic!("{bad} gave {other:?}"),
            }
        }
        let error = ConnectionString::parse("ringbroker://u:p@h:1?colour=red").expect_err("unknown");
        assert!(error.to_string().contains("unknown option `colour`"), "{error}");
    }
}
