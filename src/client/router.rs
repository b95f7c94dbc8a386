//! [`ShardRouter`]: sends each partition's requests to the shard that owns it.
//!
//! Owns a copy of the server's shard map (from [`Client::metadata`]: each shard's direct address
//! and the owner of each partition) and one lazily opened [`Client`] per shard, logged in with
//! the base client's credentials. Producers and consumers ask it for the client of a partition's
//! owner ([`ShardRouter::client_for`]) so their produces and polls need no hop between cores
//! (`docs/protocol.md`, section 7).
//!
//! Runs on the caller's tokio runtime; a router is `Send + Sync` and cheap to clone (the clones
//! share the map and the shard connections). No task of its own: everything happens inside the
//! calls.
//!
//! Why falling back is always allowed: any shard serves any partition by forwarding, so a stale
//! map, a shard without a direct listener or a direct port that refuses connections only costs a
//! hop, never a failed request. The router therefore answers the base client whenever it cannot
//! do better, and only reports errors of the base connection itself.
//!
//! Invariants: the map is replaced whole, never edited in place, so readers see one revision;
//! a cached shard client was opened for the address the current map advertises for that shard
//! (a refresh that changes the address drops it); concurrent refreshes coalesce into one
//! `Metadata` request; a shard whose direct connection failed is not retried before
//! [`SHARD_CONNECT_RETRY_AFTER`] has passed, so a closed port does not slow every call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::connection::Client;
use super::error::ClientError;
use crate::protocol::messages::MetadataResponse;

/// After a failed connection to a shard's direct address, requests for that shard use the base
/// client for this long before the router tries the direct address again.
pub const SHARD_CONNECT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Routes requests for a partition to a client connected to its owner shard.
///
/// ```no_run
/// # async fn demo() -> Result<(), ringbroker::client::ClientError> {
/// use ringbroker::client::{Client, ShardRouter};
/// let base = Client::connect_addr("127.0.0.1:7720", "ringbroker", "ringbroker").await?;
/// let router = ShardRouter::new(base).await?;
/// let partitions = router.partitions("orders", "created").await?;
/// for partition in 0..partitions {
///     let owner = router.client_for("orders", "created", partition).await?;
///     owner.ping().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShardRouter {
    inner: Arc<Inner>,
}

struct Inner {
    base: Client,
    /// The current shard map; replaced whole by each refresh.
    map: Mutex<Arc<ShardMap>>,
    /// Held while a `Metadata` request is out, so concurrent refreshes coalesce.
    refreshing: tokio::sync::Mutex<()>,
    /// Counts completed refreshes (a waiter that sees it move skips its own).
    refreshes: AtomicU64,
    /// Direct clients (or recent failures) by shard id.
    shards: Mutex<HashMap<u16, ShardSlot>>,
    /// One lock per shard, held while opening its direct connection, so a shard is not
    /// connected twice at once while different shards connect in parallel.
    connecting: Mutex<HashMap<u16, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the router knows about one shard's direct connection.
enum ShardSlot {
    /// Connected (the client reconnects by itself when its socket dies).
    Open { address: String, client: Client },
    /// Connecting failed; use the base client until `retry_at`.
    Failed { address: String, retry_at: Instant },
    /// The shard advertises the address the base client connects to (a server without
    /// per-shard listeners may advertise its shared listener): the base client it is.
    Base { address: String },
}

/// One revision of the server's shard map, indexed for lookups without allocation.
#[derive(Default)]
struct ShardMap {
    revision: u64,
    /// The response it was built from (for direct addresses).
    metadata: Option<MetadataResponse>,
    /// Stream → topic → owner shard of each partition, indexed by partition id.
    topics: HashMap<String, HashMap<String, Vec<Option<u16>>>>,
}

impl ShardMap {
    fn new(metadata: MetadataResponse) -> ShardMap {
        let mut topics: HashMap<String, HashMap<String, Vec<Option<u16>>>> = HashMap::new();
        for owner in &metadata.partitions {
            let owners =
                topics.entry(owner.stream.clone()).or_default().entry(owner.topic.clone()).or_default();
            let index = owner.partition as usize;
            if owners.len() <= index {
                owners.resize(index + 1, None);
            }
            owners[index] = Some(owner.shard);
        }
        ShardMap { revision: metadata.revision, metadata: Some(metadata), topics }
    }

    fn owners(&self, stream: &str, topic: &str) -> Option<&[Option<u16>]> {
        self.topics.get(stream)?.get(topic).map(Vec::as_slice)
    }

    fn owner(&self, stream: &str, topic: &str, partition: u32) -> Option<u16> {
        self.owners(stream, topic)?.get(partition as usize).copied().flatten()
    }

    /// The direct address shard `shard` advertises; `None` when it has none.
    fn address(&self, shard: u16) -> Option<&str> {
        let metadata = self.metadata.as_ref()?;
        let entry = metadata.shards.iter().find(|entry| entry.shard == shard)?;
        Some(entry.address.as_str()).filter(|address| !address.is_empty())
    }
}

/// Locks a std mutex, recovering it if a panicking thread poisoned it (every critical section
/// here leaves the data consistent: it swaps or inserts whole values).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ShardRouter {
    /// A router over `base`: fetches the shard map through it. `base` stays the fallback for
    /// every request the router cannot send directly.
    pub async fn new(base: Client) -> Result<ShardRouter, ClientError> {
        let metadata = base.metadata().await?;
        Ok(ShardRouter {
            inner: Arc::new(Inner {
                base,
                map: Mutex::new(Arc::new(ShardMap::new(metadata))),
                refreshing: tokio::sync::Mutex::new(()),
                refreshes: AtomicU64::new(0),
                shards: Mutex::new(HashMap::new()),
                connecting: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client the router was built on (connected to the shared listener).
    pub fn base(&self) -> &Client {
        &self.inner.base
    }

    /// The revision of the shard map in use.
    pub fn revision(&self) -> u64 {
        self.map().revision
    }

    /// Re-reads the shard map, e.g. after `UnknownTopic` or `UnknownPartition`, or after topics
    /// or partitions were created. Callers that arrive while a refresh is out wait for it and
    /// share its result instead of sending their own.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let seen = self.inner.refreshes.load(Ordering::Acquire);
        let _refreshing = self.inner.refreshing.lock().await;
        if self.inner.refreshes.load(Ordering::Acquire) != seen {
            return Ok(()); // Someone refreshed while this caller waited.
        }
        let metadata = self.inner.base.metadata().await?;
        let map = Arc::new(ShardMap::new(metadata));
        {
            // Drop direct clients whose shard now advertises another address (or none).
            let mut shards = lock(&self.inner.shards);
            shards.retain(|shard, slot| {
                let address = match slot {
                    ShardSlot::Open { address, .. }
                    | ShardSlot::Failed { address, .. }
                    | ShardSlot::Base { address } => address,
                };
                map.address(*shard) == Some(address.as_str())
            });
        }
        tracing::debug!(revision = map.revision, "shard map refreshed");
        *lock(&self.inner.map) = map;
        self.inner.refreshes.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The partition count of a topic. When the map does not know the topic, refreshes once;
    /// if it is still unknown, asks the server for the topic, so the error is the server's own
    /// (`UnknownStream`, `UnknownTopic`, `PermissionDenied`).
    pub async fn partitions(&self, stream: &str, topic: &str) -> Result<u32, ClientError> {
        if let Some(count) = self.known_partitions(stream, topic) {
            return Ok(count);
        }
        self.refresh().await?;
        if let Some(count) = self.known_partitions(stream, topic) {
            return Ok(count);
        }
        let info = self.inner.base.get_topic(stream, topic).await?;
        u32::try_from(info.partitions.len())
            .map_err(|_| ClientError::Protocol(format!("topic {stream}/{topic} lists too many partitions")))
    }

    /// The owner shard of a partition, as the current map says (no request).
    pub fn owner(&self, stream: &str, topic: &str, partition: u32) -> Option<u16> {
        self.map().owner(stream, topic, partition)
    }

    /// The client to send a partition's requests on: a direct connection to its owner shard
    /// (opened on first use with the base client's credentials and options, then cached per
    /// shard), or the base client when the partition is not in the map even after one refresh,
    /// the owner advertises no direct address (or the base client's own), or connecting to it
    /// failed recently.
    pub async fn client_for(&self, stream: &str, topic: &str, partition: u32) -> Result<Client, ClientError> {
        let mut map = self.map();
        if map.owner(stream, topic, partition).is_none() {
            self.refresh().await?;
            map = self.map();
        }
        let Some(shard) = map.owner(stream, topic, partition) else {
            // Unknown even now: the server answers the request with the proper error.
            return Ok(self.inner.base.clone());
        };
        self.shard_client(&map, shard).await
    }

    /// Opens the direct connections to every shard that owns a partition of the topic, all at
    /// once, so the first requests do not wait for them (each costs a login). A shard that
    /// cannot be reached is left to the base client, as in [`client_for`](Self::client_for);
    /// only an unknown topic (after one refresh) is an error.
    pub async fn connect_owners(&self, stream: &str, topic: &str) -> Result<(), ClientError> {
        self.partitions(stream, topic).await?;
        let map = self.map();
        let mut shards: Vec<u16> =
            map.owners(stream, topic).unwrap_or_default().iter().flatten().copied().collect();
        shards.sort_unstable();
        shards.dedup();
        let connects = shards.iter().map(|shard| self.shard_client(&map, *shard));
        for outcome in futures::future::join_all(connects).await {
            outcome?;
        }
        Ok(())
    }

    /// The direct client of `shard` under `map`, connecting if needed; the base client when
    /// there is no usable direct address.
    async fn shard_client(&self, map: &ShardMap, shard: u16) -> Result<Client, ClientError> {
        let Some(address) = map.address(shard) else {
            return Ok(self.inner.base.clone());
        };
        if let Some(client) = self.cached(shard, address) {
            return Ok(client);
        }
        let connecting = lock(&self.inner.connecting).entry(shard).or_default().clone();
        let _connecting = connecting.lock().await;
        if let Some(client) = self.cached(shard, address) {
            return Ok(client); // Another task connected (or failed) while this one waited.
        }
        let slot = match self.connect_direct(map, shard).await {
            Ok(Some(client)) => ShardSlot::Open { address: address.to_string(), client },
            Ok(None) => ShardSlot::Base { address: address.to_string() },
            Err(error) => {
                tracing::warn!(shard, %address, %error, "direct shard connection failed; using the shared listener");
                ShardSlot::Failed {
                    address: address.to_string(),
                    retry_at: Instant::now() + SHARD_CONNECT_RETRY_AFTER,
                }
            }
        };
        let client = match &slot {
            ShardSlot::Open { client, .. } => client.clone(),
            ShardSlot::Failed { .. } | ShardSlot::Base { .. } => self.inner.base.clone(),
        };
        lock(&self.inner.shards).insert(shard, slot);
        Ok(client)
    }

    /// The cached answer for `shard` at `address`: its client, or the base client while a
    /// recent failure stands. `None` means "connect now".
    fn cached(&self, shard: u16, address: &str) -> Option<Client> {
        let shards = lock(&self.inner.shards);
        match shards.get(&shard)? {
            ShardSlot::Open { address: opened, client } if opened == address => Some(client.clone()),
            ShardSlot::Base { address: same } if same == address => Some(self.inner.base.clone()),
            ShardSlot::Failed { address: failed, retry_at }
                if failed == address && Instant::now() < *retry_at =>
            {
                Some(self.inner.base.clone())
            }
            _ => None,
        }
    }

    /// Opens a client on `shard`'s direct address with the base client's credentials (the
    /// equivalent of [`Client::connect_to_shard`], reusing the map instead of fetching it).
    /// `None` when that address is the one the base client connects to.
    async fn connect_direct(&self, map: &ShardMap, shard: u16) -> Result<Option<Client>, ClientError> {
        let metadata = map.metadata.as_ref().ok_or(ClientError::Disconnected)?;
        let target = self.inner.base.shard_connection_string(metadata, shard)?;
        let base = self.inner.base.connection_string();
        if target.host == base.host && target.port == base.port {
            return Ok(None);
        }
        let client = Client::connect(&target).await?;
        tracing::debug!(shard, address = %target.address(), "direct shard connection open");
        Ok(Some(client))
    }

    fn known_partitions(&self, stream: &str, topic: &str) -> Option<u32> {
        let map = self.map();
        let owners = map.owners(stream, topic)?;
        u32::try_from(owners.len()).ok()
    }

    fn map(&self) -> Arc<ShardMap> {
        lock(&self.inner.map).clone()
    }
}

impl std::fmt::Debug for ShardRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shards: Vec<u16> = {
            let slots = lock(&self.inner.shards);
            let mut open: Vec<u16> = slots
                .iter()
                .filter(|(_, slot)| matches!(slot, ShardSlot::Open { .. }))
                .map(|(shard, _)| *shard)
                .collect();
            open.sort_unstable();
            open
        };
        f.debug_struct("ShardRouter")
            .field("base", &self.inner.base)
            .field("revision", &self.revision())
            .field("direct_shards", &shards)
            .finish()
    }
}

/// Either a plain [`Client`] or a [`ShardRouter`]: what builders accept, so callers can pass
/// whichever they hold. A plain client is wrapped in a new router (one `Metadata` request).
#[derive(Debug, Clone)]
pub enum RouterSource {
    /// Build a router over this client.
    Client(Client),
    /// Use this router (sharing its map and shard connections).
    Router(ShardRouter),
}

impl RouterSource {
    /// The router: the one given, or a new one over the client given.
    pub async fn into_router(self) -> Result<ShardRouter, ClientError> {
        match self {
            RouterSource::Client(client) => ShardRouter::new(client).await,
            RouterSource::Router(router) => Ok(router),
        }
    }
}

impl From<Client> for RouterSource {
    fn from(client: Client) -> Self {
        RouterSource::Client(client)
    }
}

impl From<&Client> for RouterSource {
    fn from(client: &Client) -> Self {
        RouterSource::Client(client.clone())
    }
}

impl From<ShardRouter> for RouterSource {
    fn from(router: ShardRouter) -> Self {
        RouterSource::Router(router)
    }
}

impl From<&ShardRouter> for RouterSource {
    fn from(router: &ShardRouter) -> Self {
        RouterSource::Router(router.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{PartitionOwner, ShardAddress};

    fn owner(stream: &str, topic: &str, partition: u32, shard: u16) -> PartitionOwner {
        PartitionOwner { stream: stream.into(), topic: topic.into(), partition, shard }
    }

    #[test]
    fn the_map_indexes_owners_and_addresses() {
        let metadata = MetadataResponse {
            revision: 7,
            shard: 0,
            shards: vec![
                ShardAddress { shard: 0, address: "127.0.0.1:7721".into() },
                ShardAddress { shard: 1, address: String::new() },
            ],
            partitions: vec![owner("s", "t", 1, 1), owner("s", "t", 0, 0), owner("s", "u", 0, 1)],
        };
        let map = ShardMap::new(metadata);
        assert_eq!(map.revision, 7);
        assert_eq!(map.owners("s", "t").map(<[_]>::len), Some(2));
        assert_eq!(map.owner("s", "t", 0), Some(0));
        assert_eq!(map.owner("s", "t", 1), Some(1));
        assert_eq!(map.owner("s", "t", 2), None);
        assert_eq!(map.owner("s", "x", 0), None);
        assert_eq!(map.owner("x", "t", 0), None);
        assert_eq!(map.address(0), Some("127.0.0.1:7721"));
        assert_eq!(map.address(1), None, "an empty address means no direct listener");
        assert_eq!(map.address(2), None);
    }
}
