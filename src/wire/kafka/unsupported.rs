//! Answers for requests the listener does not serve: an API key Kafka defines but the listener
//! does not list in ApiVersions, or a served key at a version outside its range. The answer is
//! the key's own response at the request's version, with Kafka's `UNSUPPORTED_VERSION` in its
//! top-level error code where the response has one, and no items otherwise; so a client that
//! sends one anyway gets an answer it can decode, and the connection goes on.
//!
//! Pure; runs on the connection's shard. Invariant: an answer is given only at a version the
//! crate encodes for that key (else the caller closes the connection).

use kafka_protocol::messages::*;

use super::frame::UNSUPPORTED_VERSION;

macro_rules! answers {
    (errors: [$($with:ident => $with_ty:ident),* $(,)?], plain: [$($plain:ident => $plain_ty:ident),* $(,)?] $(,)?) => {
        /// The answer to an unserved `key`: with the error code where the response has one.
        pub(crate) fn response(key: ApiKey) -> Option<ResponseKind> {
            #[allow(unreachable_patterns)]
            Some(match key {
                $(ApiKey::$with => ResponseKind::$with($with_ty::default().with_error_code(UNSUPPORTED_VERSION)),)*
                $(ApiKey::$plain => ResponseKind::$plain($plain_ty::default()),)*
                _ => return None,
            })
        }

        /// The same answer with no error code set (for versions whose response lacks the field).
        pub(crate) fn plain_response(key: ApiKey) -> Option<ResponseKind> {
            #[allow(unreachable_patterns)]
            Some(match key {
                $(ApiKey::$with => ResponseKind::$with($with_ty::default()),)*
                $(ApiKey::$plain => ResponseKind::$plain($plain_ty::default()),)*
                _ => return None,
            })
        }
    };
}

answers! {
    errors: [
        Fetch => FetchResponse,
        Metadata => MetadataResponse,
        OffsetFetch => OffsetFetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        ListGroups => ListGroupsResponse,
        SaslHandshake => SaslHandshakeResponse,
        ApiVersions => ApiVersionsResponse,
        InitProducerId => InitProducerIdResponse,
        AddPartitionsToTxn => AddPartitionsToTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        DescribeAcls => DescribeAclsResponse,
        DescribeLogDirs => DescribeLogDirsResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        CreateDelegationToken => CreateDelegationTokenResponse,
        RenewDelegationToken => RenewDelegationTokenResponse,
        ExpireDelegationToken => ExpireDelegationTokenResponse,
        DescribeDelegationToken => DescribeDelegationTokenResponse,
        ElectLeaders => ElectLeadersResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse,
        OffsetDelete => OffsetDeleteResponse,
        DescribeClientQuotas => DescribeClientQuotasResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        Vote => VoteResponse,
        BeginQuorumEpoch => BeginQuorumEpochResponse,
        EndQuorumEpoch => EndQuorumEpochResponse,
        DescribeQuorum => DescribeQuorumResponse,
        AlterPartition => AlterPartitionResponse,
        UpdateFeatures => UpdateFeaturesResponse,
        Envelope => EnvelopeResponse,
        FetchSnapshot => FetchSnapshotResponse,
        DescribeCluster => DescribeClusterResponse,
        BrokerRegistration => BrokerRegistrationResponse,
        BrokerHeartbeat => BrokerHeartbeatResponse,
        UnregisterBroker => UnregisterBrokerResponse,
        ListTransactions => ListTransactionsResponse,
        AllocateProducerIds => AllocateProducerIdsResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        ControllerRegistration => ControllerRegistrationResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        AssignReplicasToDirs => AssignReplicasToDirsResponse,
        ListConfigResources => ListConfigResourcesResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        AddRaftVoter => AddRaftVoterResponse,
        RemoveRaftVoter => RemoveRaftVoterResponse,
        UpdateRaftVoter => UpdateRaftVoterResponse,
        AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
        DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
    ],
    plain: [
        Produce => ProduceResponse,
        ListOffsets => ListOffsetsResponse,
        OffsetCommit => OffsetCommitResponse,
        DescribeGroups => DescribeGroupsResponse,
        CreateTopics => CreateTopicsResponse,
        DeleteTopics => DeleteTopicsResponse,
        DeleteRecords => DeleteRecordsResponse,
        OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
        WriteTxnMarkers => WriteTxnMarkersResponse,
        TxnOffsetCommit => TxnOffsetCommitResponse,
        CreateAcls => CreateAclsResponse,
        DeleteAcls => DeleteAclsResponse,
        DescribeConfigs => DescribeConfigsResponse,
        AlterConfigs => AlterConfigsResponse,
        AlterReplicaLogDirs => AlterReplicaLogDirsResponse,
        CreatePartitions => CreatePartitionsResponse,
        DeleteGroups => DeleteGroupsResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
        AlterClientQuotas => AlterClientQuotasResponse,
        AlterUserScramCredentials => AlterUserScramCredentialsResponse,
        DescribeProducers => DescribeProducersResponse,
        DescribeTransactions => DescribeTransactionsResponse,
        ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
        DescribeTopicPartitions => DescribeTopicPartitionsResponse,
        ShareGroupDescribe => ShareGroupDescribeResponse,
        InitializeShareGroupState => InitializeShareGroupStateResponse,
        ReadShareGroupState => ReadShareGroupStateResponse,
        WriteShareGroupState => WriteShareGroupStateResponse,
        DeleteShareGroupState => DeleteShareGroupStateResponse,
        ReadShareGroupStateSummary => ReadShareGroupStateSummaryResponse,
        DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse,
    ],
}
