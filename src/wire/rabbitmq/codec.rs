//! (stub: helper A's codec replaces this file)
#![allow(missing_docs, dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    First,
    Last,
    Next,
    Offset(u64),
    Timestamp(i64),
}
pub enum Entry<'a> {
    Simple { publishing_id: u64, message: &'a [u8], filter_value: Option<&'a str> },
    SubEntry { publishing_id: u64, compression: u8, records: u16, uncompressed_bytes: u32, data: &'a [u8] },
}
pub struct Frame<'a> {
    pub key: u16,
    pub version: u16,
    pub command: Command<'a>,
}
pub enum Command<'a> {
    PeerProperties {
        correlation: u32,
        properties: Vec<(&'a str, &'a str)>,
    },
    SaslHandshake {
        correlation: u32,
    },
    SaslAuthenticate {
        correlation: u32,
        mechanism: &'a str,
        response: &'a [u8],
    },
    Tune {
        frame_max: u32,
        heartbeat: u32,
    },
    Open {
        correlation: u32,
        virtual_host: &'a str,
    },
    Close {
        correlation: u32,
        code: u16,
        reason: &'a str,
    },
    CloseResponse {
        correlation: u32,
        code: u16,
    },
    Heartbeat,
    ExchangeCommandVersions {
        correlation: u32,
        versions: Vec<(u16, u16, u16)>,
    },
    Create {
        correlation: u32,
        stream: &'a str,
        arguments: Vec<(&'a str, &'a str)>,
    },
    Delete {
        correlation: u32,
        stream: &'a str,
    },
    Metadata {
        correlation: u32,
        streams: Vec<&'a str>,
    },
    StreamStats {
        correlation: u32,
        stream: &'a str,
    },
    DeclarePublisher {
        correlation: u32,
        publisher_id: u8,
        reference: Option<&'a str>,
        stream: &'a str,
    },
    Publish {
        publisher_id: u8,
        entries: Vec<Entry<'a>>,
    },
    QueryPublisherSequence {
        correlation: u32,
        reference: &'a str,
        stream: &'a str,
    },
    DeletePublisher {
        correlation: u32,
        publisher_id: u8,
    },
    Subscribe {
        correlation: u32,
        subscription_id: u8,
        stream: &'a str,
        offset: OffsetSpec,
        credit: u16,
        properties: Vec<(&'a str, &'a str)>,
    },
    Credit {
        subscription_id: u8,
        credit: u16,
    },
    Unsubscribe {
        correlation: u32,
        subscription_id: u8,
    },
    ConsumerUpdateResponse {
        correlation: u32,
        code: u16,
        offset: OffsetSpec,
    },
    StoreOffset {
        reference: &'a str,
        stream: &'a str,
        offset: u64,
    },
    QueryOffset {
        correlation: u32,
        reference: &'a str,
        stream: &'a str,
    },
    CreateSuperStream {
        correlation: u32,
        name: &'a str,
        partitions: Vec<&'a str>,
        binding_keys: Vec<&'a str>,
        arguments: Vec<(&'a str, &'a str)>,
    },
    DeleteSuperStream {
        correlation: u32,
        name: &'a str,
    },
    Route {
        correlation: u32,
        routing_key: &'a str,
        super_stream: &'a str,
    },
    Partitions {
        correlation: u32,
        super_stream: &'a str,
    },
}
#[derive(Debug)]
pub struct DecodeError {
    pub key: u16,
    pub correlation: Option<u32>,
    pub kind: DecodeErrorKind,
}
#[derive(Debug)]
pub enum DecodeErrorKind {
    Truncated,
    UnknownKey,
    UnsupportedVersion(u16),
    Malformed(&'static str),
}
impl DecodeError {
    pub fn response_code(&self) -> u16 {
        13
    }
}
impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}
pub fn decode(_body: &[u8]) -> Result<Frame<'_>, DecodeError> {
    Err(DecodeError { key: 0, correlation: None, kind: DecodeErrorKind::Truncated })
}
pub mod keys {
    pub const DECLARE_PUBLISHER: u16 = 1;
    pub const PUBLISH: u16 = 2;
    pub const PUBLISH_CONFIRM: u16 = 3;
    pub const PUBLISH_ERROR: u16 = 4;
    pub const QUERY_PUBLISHER_SEQUENCE: u16 = 5;
    pub const DELETE_PUBLISHER: u16 = 6;
    pub const SUBSCRIBE: u16 = 7;
    pub const DELIVER: u16 = 8;
    pub const CREDIT: u16 = 9;
    pub const STORE_OFFSET: u16 = 10;
    pub const QUERY_OFFSET: u16 = 11;
    pub const UNSUBSCRIBE: u16 = 12;
    pub const CREATE: u16 = 13;
    pub const DELETE: u16 = 14;
    pub const METADATA: u16 = 15;
    pub const METADATA_UPDATE: u16 = 16;
    pub const PEER_PROPERTIES: u16 = 17;
    pub const SASL_HANDSHAKE: u16 = 18;
    pub const SASL_AUTHENTICATE: u16 = 19;
    pub const TUNE: u16 = 20;
    pub const OPEN: u16 = 21;
    pub const CLOSE: u16 = 22;
    pub const HEARTBEAT: u16 = 23;
    pub const ROUTE: u16 = 24;
    pub const PARTITIONS: u16 = 25;
    pub const CONSUMER_UPDATE: u16 = 26;
    pub const EXCHANGE_COMMAND_VERSIONS: u16 = 27;
    pub const STREAM_STATS: u16 = 28;
    pub const CREATE_SUPER_STREAM: u16 = 29;
    pub const DELETE_SUPER_STREAM: u16 = 30;
}
pub mod codes {
    pub const OK: u16 = 1;
    pub const STREAM_DOES_NOT_EXIST: u16 = 2;
    pub const SUBSCRIPTION_ID_ALREADY_EXISTS: u16 = 3;
    pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: u16 = 4;
    pub const STREAM_ALREADY_EXISTS: u16 = 5;
    pub const STREAM_NOT_AVAILABLE: u16 = 6;
    pub const SASL_MECHANISM_NOT_SUPPORTED: u16 = 7;
    pub const AUTHENTICATION_FAILURE: u16 = 8;
    pub const SASL_ERROR: u16 = 9;
    pub const SASL_CHALLENGE: u16 = 10;
    pub const SASL_AUTHENTICATION_FAILURE_LOOPBACK: u16 = 11;
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 12;
    pub const UNKNOWN_FRAME: u16 = 13;
    pub const FRAME_TOO_LARGE: u16 = 14;
    pub const INTERNAL_ERROR: u16 = 15;
    pub const ACCESS_REFUSED: u16 = 16;
    pub const PRECONDITION_FAILED: u16 = 17;
    pub const PUBLISHER_DOES_NOT_EXIST: u16 = 18;
    pub const NO_OFFSET: u16 = 19;
}
