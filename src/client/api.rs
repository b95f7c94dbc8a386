//! Typed methods on [`Client`], one per request [`Kind`]: each builds the request body, calls
//! [`Client::request`] and unwraps the response.
//!
//! Runs on the calling task. Invariants: every `Kind` in [`Kind::ALL`] has a method here (the
//! test at the bottom lists them); responses that disagree with their request (a produce
//! answered with the wrong number of acks, a poll whose byte counts do not cover its payload)
//! are [`ClientError::Protocol`] errors, never silently accepted.

use std::time::Duration;

use super::connection::Client;
use super::error::ClientError;
use super::polled::Polled;
use crate::protocol::batch::BatchHeader;
use crate::protocol::messages::{
    AddPartitions, ConsumerRef, CreateStream, CreateTopic, CreateUser, Empty, GetOffset, GroupInfo,
    GroupList, GroupRef, JoinGroup, Kind, MemberRef, Membership, NameRef, OffsetInfo, Partitioning,
    PingResponse, PollRequest, PollResponse, ProduceRequest, ProduceResponse, ProducerDeclare,
    ProducerDeclared, ProducerHeartbeat, ProducerList, ProducerListRequest, ProducerRef,
    ProducerSequenceInfo, SetPermissions, StatsRequest, StatsResponse, StoreOffset, StreamInfo, StreamList,
    StreamPermission, TopicConfig, TopicInfo, TopicList, TopicRef, UserList,
};

impl Client {
    /// Liveness check: the server's version and the shard that answered.
    pub async fn ping(&self) -> Result<PingResponse, ClientError> {
        Ok(self.request(Kind::Ping, &Empty {}, &[]).await?.0)
    }

    /// Creates a user (administrators only).
    pub async fn create_user(&self, user: &CreateUser) -> Result<(), ClientError> {
        self.request::<_, Empty>(Kind::UserCreate, user, &[]).await.map(drop)
    }

    /// Deletes a user (administrators only).
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.request::<_, Empty>(Kind::UserDelete, &name_ref(name), &[]).await.map(drop)
    }

    /// Every user (administrators only).
    pub async fn list_users(&self) -> Result<UserList, ClientError> {
        Ok(self.request(Kind::UserList, &Empty {}, &[]).await?.0)
    }

    /// Replaces a user's per-stream rights (administrators only).
    pub async fn set_permissions(
        &self,
        user: &str,
        permissions: Vec<StreamPermission>,
    ) -> Result<(), ClientError> {
        let request = SetPermissions { user: user.to_string(), permissions };
        self.request::<_, Empty>(Kind::UserSetPermissions, &request, &[]).await.map(drop)
    }

    /// Creates a stream; with `if_missing`, an existing one is returned instead of an error.
    pub async fn create_stream(&self, name: &str, if_missing: bool) -> Result<StreamInfo, ClientError> {
        let request = CreateStream { name: name.to_string(), if_missing };
        Ok(self.request(Kind::StreamCreate, &request, &[]).await?.0)
    }

    /// Deletes a stream with its topics and data.
    pub async fn delete_stream(&self, name: &str) -> Result<(), ClientError> {
        self.request::<_, Empty>(Kind::StreamDelete, &name_ref(name), &[]).await.map(drop)
    }

    /// Every stream the user may see.
    pub async fn list_streams(&self) -> Result<StreamList, ClientError> {
        Ok(self.request(Kind::StreamList, &Empty {}, &[]).await?.0)
    }

    /// One stream with its topics.
    pub async fn get_stream(&self, name: &str) -> Result<StreamInfo, ClientError> {
        Ok(self.request(Kind::StreamGet, &name_ref(name), &[]).await?.0)
    }

    /// Creates a topic; with `if_missing`, an existing one is returned instead of an error.
    pub async fn create_topic(
        &self,
        stream: &str,
        name: &str,
        config: TopicConfig,
        if_missing: bool,
    ) -> Result<TopicInfo, ClientError> {
        let policy = crate::protocol::durable::TopicPolicy::default();
        let request =
            CreateTopic { stream: stream.to_string(), name: name.to_string(), config, policy, if_missing };
        Ok(self.request(Kind::TopicCreate, &request, &[]).await?.0)
    }

    /// Deletes a topic with its data.
    pub async fn delete_topic(&self, stream: &str, topic: &str) -> Result<(), ClientError> {
        self.request::<_, Empty>(Kind::TopicDelete, &topic_ref(stream, topic), &[]).await.map(drop)
    }

    /// The topics of a stream.
    pub async fn list_topics(&self, stream: &str) -> Result<TopicList, ClientError> {
        Ok(self.request(Kind::TopicList, &name_ref(stream), &[]).await?.0)
    }

    /// One topic with its partitions and groups.
    pub async fn get_topic(&self, stream: &str, topic: &str) -> Result<TopicInfo, ClientError> {
        Ok(self.request(Kind::TopicGet, &topic_ref(stream, topic), &[]).await?.0)
    }

    /// Adds `count` partitions to a topic.
    pub async fn add_partitions(
        &self,
        stream: &str,
        topic: &str,
        count: u32,
    ) -> Result<TopicInfo, ClientError> {
        let request = AddPartitions { stream: stream.to_string(), topic: topic.to_string(), count };
        Ok(self.request(Kind::PartitionsAdd, &request, &[]).await?.0)
    }

    /// Appends whole batches (from [`BatchBuilder`](crate::protocol::batch::BatchBuilder)) to one
    /// partition, chosen by `partitioning`; answers with one ack per batch, in order.
    ///
    /// The batches travel back to back as the frame payload, untouched. Each is checked locally
    /// only for a sane header and a length equal to its slice (the server validates the rest).
    pub async fn produce(
        &self,
        stream: &str,
        topic: &str,
        partitioning: Partitioning,
        batches: &[&[u8]],
    ) -> Result<ProduceResponse, ClientError> {
        let batch_count = check_batches(batches)?;
        let request = ProduceRequest {
            stream: stream.to_string(),
            topic: topic.to_string(),
            partitioning,
            batch_count,
        };
        let (response, _) = self.request::<_, ProduceResponse>(Kind::Produce, &request, batches).await?;
        if response.acks.len() != batches.len() {
            return Err(ClientError::Protocol(format!(
                "{} batches produced, {} acknowledged",
                batches.len(),
                response.acks.len()
            )));
        }
        Ok(response)
    }

    /// Polls: whole batches from the partition or the group member's assignment. The timeout
    /// is the request timeout plus the long-poll wait.
    pub async fn poll(&self, request: &PollRequest) -> Result<Polled, ClientError> {
        let timeout =
            self.connection_string().options.timeout + Duration::from_millis(u64::from(request.max_wait_ms));
        let (response, payload) =
            self.request_with_timeout::<_, PollResponse>(Kind::Poll, request, &[], timeout).await?;
        Polled::new(response, payload)
    }

    /// Stores `offset` (the next offset to read) for a named consumer or a group.
    pub async fn store_offset(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        consumer: ConsumerRef,
        offset: u64,
    ) -> Result<(), ClientError> {
        let request =
            StoreOffset { stream: stream.to_string(), topic: topic.to_string(), partition, consumer, offset };
        self.request::<_, Empty>(Kind::OffsetStore, &request, &[]).await.map(drop)
    }

    /// The stored offset of a named consumer or group, and the partition's end.
    pub async fn get_offset(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        consumer: ConsumerRef,
    ) -> Result<OffsetInfo, ClientError> {
        let request = GetOffset { stream: stream.to_string(), topic: topic.to_string(), partition, consumer };
        Ok(self.request(Kind::OffsetGet, &request, &[]).await?.0)
    }

    /// Creates a consumer group; with `if_missing`, an existing one is returned instead.
    pub async fn create_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        if_missing: bool,
    ) -> Result<GroupInfo, ClientError> {
        Ok(self.request(Kind::GroupCreate, &group_ref(stream, topic, group, if_missing), &[]).await?.0)
    }

    /// Deletes a consumer group and its offsets.
    pub async fn delete_group(&self, stream: &str, topic: &str, group: &str) -> Result<(), ClientError> {
        let request = group_ref(stream, topic, group, false);
        self.request::<_, Empty>(Kind::GroupDelete, &request, &[]).await.map(drop)
    }

    /// Joins a group: a member id, the generation and the partitions assigned.
    pub async fn join_group(&self, request: &JoinGroup) -> Result<Membership, ClientError> {
        Ok(self.request(Kind::GroupJoin, request, &[]).await?.0)
    }

    /// Leaves a group (its partitions go to the other members).
    pub async fn leave_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        member_id: u64,
    ) -> Result<(), ClientError> {
        let request = member_ref(stream, topic, group, member_id);
        self.request::<_, Empty>(Kind::GroupLeave, &request, &[]).await.map(drop)
    }

    /// Keeps a membership alive; answers with the current generation and assignment.
    pub async fn heartbeat(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        member_id: u64,
    ) -> Result<Membership, ClientError> {
        Ok(self.request(Kind::GroupHeartbeat, &member_ref(stream, topic, group, member_id), &[]).await?.0)
    }

    /// The consumer groups of a topic.
    pub async fn list_groups(&self, stream: &str, topic: &str) -> Result<GroupList, ClientError> {
        Ok(self.request(Kind::GroupList, &topic_ref(stream, topic), &[]).await?.0)
    }

    /// One group: generation, members with their assignments, stored offsets.
    pub async fn describe_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<GroupInfo, ClientError> {
        Ok(self.request(Kind::GroupDescribe, &group_ref(stream, topic, group, false), &[]).await?.0)
    }

    /// Statistics of every stream the user may read (or of one), and server counters.
    pub async fn stats(&self, stream: Option<&str>) -> Result<StatsResponse, ClientError> {
        let request = StatsRequest { stream: stream.map(str::to_string) };
        Ok(self.request(Kind::Stats, &request, &[]).await?.0)
    }

    /// Declares a named producer on a topic: its id, its new epoch (older epochs are fenced
    /// from now on), its last stored sequence per partition and the lease's session timeout.
    /// `ProducerBusy` when another session holds the topic exclusively (or, for an exclusive
    /// declaration, when other producers hold it). The lease lives on this connection.
    pub async fn declare_producer(&self, request: &ProducerDeclare) -> Result<ProducerDeclared, ClientError> {
        Ok(self.request(Kind::ProducerDeclare, request, &[]).await?.0)
    }

    /// The last sequence a named producer stored on one partition (`UnknownProducer` for a
    /// name never declared on the topic).
    pub async fn producer_sequence(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        name: &str,
    ) -> Result<ProducerSequenceInfo, ClientError> {
        let request = producer_ref(stream, topic, partition, name);
        Ok(self.request(Kind::ProducerSequence, &request, &[]).await?.0)
    }

    /// Forgets a named producer on every partition of a topic (its next declaration starts
    /// over at sequence 0, so its old batches are no longer recognised as duplicates).
    pub async fn delete_producer(&self, stream: &str, topic: &str, name: &str) -> Result<(), ClientError> {
        let request = producer_ref(stream, topic, 0, name);
        self.request::<_, Empty>(Kind::ProducerDelete, &request, &[]).await.map(drop)
    }

    /// Keeps this connection's lease on a named producer alive; send well within the
    /// declaration's `session_timeout_ms`.
    pub async fn producer_heartbeat(&self, stream: &str, topic: &str, name: &str) -> Result<(), ClientError> {
        let request = producer_heartbeat(stream, topic, name);
        self.request::<_, Empty>(Kind::ProducerHeartbeat, &request, &[]).await.map(drop)
    }

    /// The named producers of one stream, or of every stream the user may see.
    pub async fn list_producers(&self, stream: Option<&str>) -> Result<ProducerList, ClientError> {
        let request = ProducerListRequest { stream: stream.map(str::to_string) };
        Ok(self.request(Kind::ProducerList, &request, &[]).await?.0)
    }

    /// Ends this connection's lease on a named producer (an exclusive topic is free at once).
    pub async fn close_producer(&self, stream: &str, topic: &str, name: &str) -> Result<(), ClientError> {
        let request = producer_heartbeat(stream, topic, name);
        self.request::<_, Empty>(Kind::ProducerClose, &request, &[]).await.map(drop)
    }
}

fn producer_ref(stream: &str, topic: &str, partition: u32, name: &str) -> ProducerRef {
    ProducerRef { stream: stream.to_string(), topic: topic.to_string(), partition, name: name.to_string() }
}

fn producer_heartbeat(stream: &str, topic: &str, name: &str) -> ProducerHeartbeat {
    ProducerHeartbeat { stream: stream.to_string(), topic: topic.to_string(), name: name.to_string() }
}

/// Checks each batch's header and that its length is its slice's; returns the count.
fn check_batches(batches: &[&[u8]]) -> Result<u32, ClientError> {
    if batches.is_empty() {
        return Err(ClientError::InvalidRequest("a produce request needs at least one batch".to_string()));
    }
    for (index, batch) in batches.iter().enumerate() {
        let header = BatchHeader::decode(batch)
            .map_err(|error| ClientError::InvalidRequest(format!("batch {index}: {error}")))?;
        if header.length as usize != batch.len() {
            return Err(ClientError::InvalidRequest(format!(
                "batch {index} declares {} bytes but is {} bytes long",
                header.length,
                batch.len()
            )));
        }
    }
    u32::try_from(batches.len())
        .map_err(|_| ClientError::InvalidRequest(format!("{} batches in one request", batches.len())))
}

fn name_ref(name: &str) -> NameRef {
    NameRef { name: name.to_string() }
}

fn topic_ref(stream: &str, topic: &str) -> TopicRef {
    TopicRef { stream: stream.to_string(), topic: topic.to_string() }
}

fn group_ref(stream: &str, topic: &str, group: &str, if_missing: bool) -> GroupRef {
    GroupRef { stream: stream.to_string(), topic: topic.to_string(), group: group.to_string(), if_missing }
}

fn member_ref(stream: &str, topic: &str, group: &str, member_id: u64) -> MemberRef {
    MemberRef { stream: stream.to_string(), topic: topic.to_string(), group: group.to_string(), member_id }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchBuilder;

    /// The method that sends each kind; a new kind fails to compile here until it has one.
    fn method_of(kind: Kind) -> &'static str {
        match kind {
            Kind::Ping => "ping",
            Kind::Login => "login",
            Kind::Metadata => "metadata",
            Kind::UserCreate => "create_user",
            Kind::UserDelete => "delete_user",
            Kind::UserList => "list_users",
            Kind::UserSetPermissions => "set_permissions",
            Kind::StreamCreate => "create_stream",
            Kind::StreamDelete => "delete_stream",
            Kind::StreamList => "list_streams",
            Kind::StreamGet => "get_stream",
            Kind::TopicCreate => "create_topic",
            Kind::TopicDelete => "delete_topic",
            Kind::TopicList => "list_topics",
            Kind::TopicGet => "get_topic",
            Kind::PartitionsAdd => "add_partitions",
            Kind::Produce => "produce",
            Kind::Poll => "poll",
            Kind::OffsetStore => "store_offset",
            Kind::OffsetGet => "get_offset",
            Kind::GroupCreate => "create_group",
            Kind::GroupDelete => "delete_group",
            Kind::GroupJoin => "join_group",
            Kind::GroupLeave => "leave_group",
            Kind::GroupHeartbeat => "heartbeat",
            Kind::GroupList => "list_groups",
            Kind::GroupDescribe => "describe_group",
            Kind::Stats => "stats",
            Kind::ProducerDeclare => "declare_producer",
            Kind::ProducerSequence => "producer_sequence",
            Kind::ProducerDelete => "delete_producer",
            Kind::ProducerHeartbeat => "producer_heartbeat",
            Kind::ProducerList => "list_producers",
            Kind::ProducerClose => "close_producer",
            Kind::Subscribe => "subscribe",
            Kind::Credit => "Subscription::credit",
            Kind::Unsubscribe => "Subscription::unsubscribe",
            Kind::Deliver => "Subscription::next",
            Kind::ConsumerUpdate => "Subscription::next (consumer updates)",
            Kind::SubscribeDurable => "subscribe_durable",
            Kind::SuperStreamCreate => "create_super_stream",
            Kind::SuperStreamDelete => "delete_super_stream",
            Kind::SuperStreamRoute => "route_super_stream",
            Kind::SuperStreamPartitions => "super_stream_partitions",
            Kind::TopicState => "topic_state",
            Kind::ConsumerCreate => "create_consumer",
            Kind::ConsumerDelete => "delete_consumer",
            Kind::ConsumerInfo => "consumer_info",
            Kind::ConsumerList => "list_consumers",
            Kind::Fetch => "fetch",
            Kind::Ack => "ack",
        }
    }

    #[test]
    fn every_kind_has_a_method() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|kind| method_of(*kind)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }

    #[test]
    fn produce_refuses_what_cannot_be_a_batch_list() {
        let mut builder = BatchBuilder::new(0, 0);
        builder.push_payload(b"hello").expect("push");
        let batch = builder.finish().expect("finish");
        assert_eq!(check_batches(&[&batch, &batch]).expect("valid"), 2);
        assert!(matches!(check_batches(&[]), Err(ClientError::InvalidRequest(_))));
        assert!(matches!(check_batches(&[&batch[..batch.len() - 1]]), Err(ClientError::InvalidRequest(_))));
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        assert!(matches!(check_batches(&[&two]), Err(ClientError::InvalidRequest(_))));
        assert!(matches!(check_batches(&[b"not a batch"]), Err(ClientError::InvalidRequest(_))));
    }
}
