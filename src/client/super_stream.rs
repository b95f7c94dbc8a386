//! Super streams on the client: a typed [`Client`] method per super-stream kind (create, delete,
//! route, partitions) and [`consumer`], a plain consumer of every partition of a super stream.
//! The super-stream producer is [`super::producer::SuperStreamProducer`].
//!
//! Runs on the calling task. Invariants: an answer that breaks the protocol's promises (a route
//! with no partition or with partitions out of order, a partition list that disagrees with
//! itself) is a [`ClientError::Protocol`] error, never passed on.
//!
//! ```no_run
//! # async fn demo(client: ringbroker::client::Client) -> Result<(), ringbroker::client::ClientError> {
//! use ringbroker::protocol::super_stream::SuperStreamLayout;
//! let keys = vec!["amer".to_string(), "emea".to_string(), "apac".to_string()];
//! client.create_super_stream("billing", "invoices", SuperStreamLayout::BindingKeys(keys), true).await?;
//! let routed = client.route_super_stream("billing", "invoices", "emea", None).await?;
//! assert_eq!(routed.partitions, [1]);
//! # Ok(()) }
//! ```

use super::connection::Client;
use super::consumer::{Consumer, ConsumerBuilder};
use super::error::ClientError;
use super::router::RouterSource;
use crate::protocol::messages::{Empty, Kind, TopicConfig, TopicInfo};
use crate::protocol::super_stream::{
    SuperStreamCreate, SuperStreamLayout, SuperStreamPartitions, SuperStreamRef, SuperStreamRoute,
    SuperStreamRouted, SuperStreamRouting,
};

impl Client {
    /// Creates super stream `name` in `stream` with default topic settings: `layout` is a
    /// partition count (hash routing) or one binding key per partition (key routing; a repeated
    /// key is refused, see [`create_super_stream_with`](Self::create_super_stream_with)). With
    /// `if_missing`, an existing super stream of that name is returned instead of an error.
    pub async fn create_super_stream(
        &self,
        stream: &str,
        name: &str,
        layout: SuperStreamLayout,
        if_missing: bool,
    ) -> Result<TopicInfo, ClientError> {
        let request = SuperStreamCreate {
            stream: stream.to_string(),
            name: name.to_string(),
            layout,
            shared_keys: false,
            config: TopicConfig::default(),
            if_missing,
        };
        self.create_super_stream_with(&request).await
    }

    /// Creates a super stream with every field of the request: retention and segment settings,
    /// and `shared_keys` to bind one key to several partitions.
    pub async fn create_super_stream_with(
        &self,
        request: &SuperStreamCreate,
    ) -> Result<TopicInfo, ClientError> {
        let (info, _) = self.request::<_, TopicInfo>(Kind::SuperStreamCreate, request, &[]).await?;
        if info.super_stream.is_none() {
            return Err(ClientError::Protocol(format!(
                "super stream {} created as a plain topic",
                info.name
            )));
        }
        Ok(info)
    }

    /// Deletes a super stream with its partitions' data (a plain topic is refused with
    /// `NotASuperStream`).
    pub async fn delete_super_stream(&self, stream: &str, name: &str) -> Result<(), ClientError> {
        let request = SuperStreamRef { stream: stream.to_string(), name: name.to_string() };
        self.request::<_, Empty>(Kind::SuperStreamDelete, &request, &[]).await.map(drop)
    }

    /// The partitions `routing_key` goes to, by `routing` (none: the super stream's own). No
    /// partition bound to the key is the `NoRoute` status.
    pub async fn route_super_stream(
        &self,
        stream: &str,
        name: &str,
        routing_key: &str,
        routing: Option<SuperStreamRouting>,
    ) -> Result<SuperStreamRouted, ClientError> {
        let request = SuperStreamRoute {
            stream: stream.to_string(),
            name: name.to_string(),
            routing_key: routing_key.to_string(),
            routing,
        };
        let (routed, _) = self.request::<_, SuperStreamRouted>(Kind::SuperStreamRoute, &request, &[]).await?;
        let ascending = routed.partitions.windows(2).all(|pair| pair[0] < pair[1]);
        if routed.partitions.is_empty() || !ascending {
            return Err(ClientError::Protocol(format!(
                "route answered partitions {:?}: expected at least one, ascending",
                routed.partitions
            )));
        }
        Ok(routed)
    }

    /// Every partition of a super stream with its binding key and owner shard.
    pub async fn super_stream_partitions(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<SuperStreamPartitions, ClientError> {
        let request = SuperStreamRef { stream: stream.to_string(), name: name.to_string() };
        let (answer, _) =
            self.request::<_, SuperStreamPartitions>(Kind::SuperStreamPartitions, &request, &[]).await?;
        let in_order = answer.partitions.iter().enumerate().all(|(i, p)| p.id as usize == i);
        if answer.partitions.is_empty() || !in_order {
            return Err(ClientError::Protocol(format!(
                "super stream {} listed {} partitions, not numbered 0..",
                answer.name,
                answer.partitions.len()
            )));
        }
        Ok(answer)
    }
}

/// A consumer builder for every partition of super stream `name` of `stream`, read as the named
/// consumer `consumer_name` with the ordinary poll consumer (partitions round robin, each from
/// its owner shard). Fails unless `name` is a super stream. Set anything else on the builder
/// before `build`; not for consumer groups or single active consumers.
pub async fn consumer(
    source: impl Into<RouterSource>,
    stream: &str,
    name: &str,
    consumer_name: &str,
) -> Result<ConsumerBuilder, ClientError> {
    let router = source.into().into_router().await?;
    router.base().super_stream_partitions(stream, name).await?;
    Ok(Consumer::builder(router, stream, name).consumer_name(consumer_name))
}
