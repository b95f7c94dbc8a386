//! Command keys of the RabbitMQ Streams protocol (the low 15 bits of a frame's first field;
//! a response sets the top bit). Constants only, used on whichever core handles the connection.

/// The top bit of a key: set on responses (`key | RESPONSE`).
pub const RESPONSE: u16 = 0x8000;
/// Client: declare a publisher (optionally named, for deduplication).
pub const DECLARE_PUBLISHER: u16 = 1;
/// Client: publish messages (version 1, or 2 with a filter value per message).
pub const PUBLISH: u16 = 2;
/// Server: publishing ids written.
pub const PUBLISH_CONFIRM: u16 = 3;
/// Server: publishing ids refused, with a code each.
pub const PUBLISH_ERROR: u16 = 4;
/// Client: last publishing id of a named publisher.
pub const QUERY_PUBLISHER_SEQUENCE: u16 = 5;
/// Client: delete a publisher.
pub const DELETE_PUBLISHER: u16 = 6;
/// Client: subscribe to a stream.
pub const SUBSCRIBE: u16 = 7;
/// Server: a chunk for a subscription.
pub const DELIVER: u16 = 8;
/// Client: more chunks for a subscription (answered only on error).
pub const CREDIT: u16 = 9;
/// Client: store a consumer offset (no answer).
pub const STORE_OFFSET: u16 = 10;
/// Client: read a stored consumer offset.
pub const QUERY_OFFSET: u16 = 11;
/// Client: end a subscription.
pub const UNSUBSCRIBE: u16 = 12;
/// Client: create a stream.
pub const CREATE: u16 = 13;
/// Client: delete a stream.
pub const DELETE: u16 = 14;
/// Client: brokers and leaders of streams.
pub const METADATA: u16 = 15;
/// Server: a stream changed (deleted, moved).
pub const METADATA_UPDATE: u16 = 16;
/// Client: exchange connection properties.
pub const PEER_PROPERTIES: u16 = 17;
/// Client: list SASL mechanisms.
pub const SASL_HANDSHAKE: u16 = 18;
/// Client: a SASL response.
pub const SASL_AUTHENTICATE: u16 = 19;
/// Server proposes, client answers: frame size and heartbeat.
pub const TUNE: u16 = 20;
/// Client: open a virtual host.
pub const OPEN: u16 = 21;
/// Either side: close the connection.
pub const CLOSE: u16 = 22;
/// Either side: keep-alive.
pub const HEARTBEAT: u16 = 23;
/// Client: streams of a super stream for a routing key.
pub const ROUTE: u16 = 24;
/// Client: partitions of a super stream.
pub const PARTITIONS: u16 = 25;
/// Server: a single-active-consumer subscription became active or inactive.
pub const CONSUMER_UPDATE: u16 = 26;
/// Client: the command versions each side supports.
pub const EXCHANGE_COMMAND_VERSIONS: u16 = 27;
/// Client: statistics of a stream.
pub const STREAM_STATS: u16 = 28;
/// Client: create a super stream.
pub const CREATE_SUPER_STREAM: u16 = 29;
/// Client: delete a super stream.
pub const DELETE_SUPER_STREAM: u16 = 30;
/// Client (RabbitMQ 4.3): resolve an offset specification. Not supported: [`super::decode`]
/// returns `UnknownKey`, and it is not advertised, so clients do not send it.
pub const RESOLVE_OFFSET_SPEC: u16 = 31;
/// Client: its answer to our [`CLOSE`].
pub const CLOSE_RESPONSE: u16 = RESPONSE | CLOSE;
/// Client: its answer to our [`TUNE`] (the Java client sets the response bit; others send
/// [`TUNE`]; both decode to `Command::Tune`).
pub const TUNE_RESPONSE: u16 = RESPONSE | TUNE;
/// Client: its answer to our [`CONSUMER_UPDATE`], with the offset to start from.
pub const CONSUMER_UPDATE_RESPONSE: u16 = RESPONSE | CONSUMER_UPDATE;

/// The command's name for logs and errors (`"unknown"` for keys we do not know).
pub fn name(key: u16) -> &'static str {
    match key & !RESPONSE {
        DECLARE_PUBLISHER => "DeclarePublisher",
        PUBLISH => "Publish",
        PUBLISH_CONFIRM => "PublishConfirm",
        PUBLISH_ERROR => "PublishError",
        QUERY_PUBLISHER_SEQUENCE => "QueryPublisherSequence",
        DELETE_PUBLISHER => "DeletePublisher",
        SUBSCRIBE => "Subscribe",
        DELIVER => "Deliver",
        CREDIT => "Credit",
        STORE_OFFSET => "StoreOffset",
        QUERY_OFFSET => "QueryOffset",
        UNSUBSCRIBE => "Unsubscribe",
        CREATE => "Create",
        DELETE => "Delete",
        METADATA => "Metadata",
        METADATA_UPDATE => "MetadataUpdate",
        PEER_PROPERTIES => "PeerProperties",
        SASL_HANDSHAKE => "SaslHandshake",
        SASL_AUTHENTICATE => "SaslAuthenticate",
        TUNE => "Tune",
        OPEN => "Open",
        CLOSE => "Close",
        HEARTBEAT => "Heartbeat",
        ROUTE => "Route",
        PARTITIONS => "Partitions",
        CONSUMER_UPDATE => "ConsumerUpdate",
        EXCHANGE_COMMAND_VERSIONS => "ExchangeCommandVersions",
        STREAM_STATS => "StreamStats",
        CREATE_SUPER_STREAM => "CreateSuperStream",
        DELETE_SUPER_STREAM => "DeleteSuperStream",
        RESOLVE_OFFSET_SPEC => "ResolveOffsetSpec",
        _ => "unknown",
    }
}
