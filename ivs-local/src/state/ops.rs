//! The store's face to the control plane: one method per IVS operation, its request shape in
//! and its response shape out, so the HTTP layer only parses, dispatches and formats. The
//! operations that also reach the media plane, the events sockets or the token signer
//! (creating stages with tokens, deleting stages, disconnecting) are composed in `api.rs`
//! from the methods here.

use stagefan_core::ivs::{
    CreateStageRequest, DeletePublicKeyRequest, DisconnectParticipantRequest, EmptyResponse,
    GetParticipantRequest, GetParticipantResponse, GetPublicKeyRequest, GetPublicKeyResponse,
    GetStageRequest, GetStageResponse, ImportPublicKeyRequest, ImportPublicKeyResponse,
    ListParticipantEventsRequest, ListParticipantEventsResponse, ListParticipantReplicasRequest,
    ListParticipantReplicasResponse, ListParticipantsRequest, ListParticipantsResponse,
    ListPublicKeysRequest, ListPublicKeysResponse, ListStagesRequest, ListStagesResponse,
    ListTagsForResourceResponse, ParticipantTokenConfiguration, StartParticipantReplicationRequest,
    StopParticipantReplicationRequest, TagResourceBody, UpdateStageRequest, UpdateStageResponse,
    MAX_TOKEN_CONFIGURATIONS,
};

use super::*;

/// Longest `reason` of DisconnectParticipant.
const MAX_REASON_CHARS: usize = 128;
/// Longest `reconnectWindowSeconds` of StartParticipantReplication.
const MAX_RECONNECT_WINDOW_SECONDS: u32 = 300;

impl Store {
    /// CreateStage's stage (its tokens are minted by the caller, which holds the key): checks
    /// the token configurations first, so a refused request creates nothing.
    pub fn create_stage_op(
        &mut self,
        r: CreateStageRequest,
        random_id: &[u8; 12],
    ) -> Result<(Stage, Vec<ParticipantTokenConfiguration>), IvsError> {
        let configs = r.participant_token_configurations.unwrap_or_default();
        if configs.len() > MAX_TOKEN_CONFIGURATIONS {
            return Err(validation(format!(
                "participantTokenConfigurations must have at most {MAX_TOKEN_CONFIGURATIONS} members"
            )));
        }
        for c in &configs {
            ivs::validate_token_request(
                c.duration,
                c.user_id.as_deref(),
                c.attributes.as_ref(),
                c.capabilities.as_deref(),
            )
            .map_err(validation)?;
        }
        let stage = self.create_stage(
            r.name,
            r.tags,
            r.auto_participant_recording_configuration,
            random_id,
        )?;
        Ok((stage, configs))
    }

    /// GetStage.
    pub fn get_stage_op(&self, r: GetStageRequest) -> Result<GetStageResponse, IvsError> {
        Ok(GetStageResponse {
            stage: Some(self.get_stage(&r.arn)?),
        })
    }

    /// UpdateStage.
    pub fn update_stage_op(
        &mut self,
        r: UpdateStageRequest,
    ) -> Result<UpdateStageResponse, IvsError> {
        let stage =
            self.update_stage(&r.arn, r.name, r.auto_participant_recording_configuration)?;
        Ok(UpdateStageResponse { stage: Some(stage) })
    }

    /// ListStages.
    pub fn list_stages_op(&self, r: ListStagesRequest) -> Result<ListStagesResponse, IvsError> {
        let (stages, next_token) = self.list_stages(r.next_token.as_deref(), r.max_results)?;
        Ok(ListStagesResponse { stages, next_token })
    }

    /// ListParticipants.
    pub fn list_participants_op(
        &self,
        r: ListParticipantsRequest,
    ) -> Result<ListParticipantsResponse, IvsError> {
        let (participants, next_token) = self.list_participants(
            &r.stage_arn,
            &r.session_id,
            r.filter_by_user_id.as_deref(),
            r.filter_by_published,
            r.filter_by_state,
            r.next_token.as_deref(),
            r.max_results,
        )?;
        Ok(ListParticipantsResponse {
            participants,
            next_token,
        })
    }

    /// GetParticipant.
    pub fn get_participant_op(
        &self,
        r: GetParticipantRequest,
    ) -> Result<GetParticipantResponse, IvsError> {
        let p = self.get_participant(&r.stage_arn, &r.session_id, &r.participant_id)?;
        Ok(GetParticipantResponse {
            participant: Some(p),
        })
    }

    /// ListParticipantEvents.
    pub fn list_participant_events_op(
        &self,
        r: ListParticipantEventsRequest,
    ) -> Result<ListParticipantEventsResponse, IvsError> {
        let (events, next_token) = self.list_participant_events(
            &r.stage_arn,
            &r.session_id,
            &r.participant_id,
            r.next_token.as_deref(),
            r.max_results,
        )?;
        Ok(ListParticipantEventsResponse { events, next_token })
    }

    /// DisconnectParticipant's state change: the media connection the participant had, if
    /// any (the caller closes it and the participant's events socket).
    pub fn disconnect_participant_op(
        &mut self,
        r: &DisconnectParticipantRequest,
        now: i64,
    ) -> Result<Option<u64>, IvsError> {
        if r.reason
            .as_ref()
            .is_some_and(|x| x.chars().count() > MAX_REASON_CHARS)
        {
            return Err(validation(format!(
                "reason must be at most {MAX_REASON_CHARS} characters"
            )));
        }
        self.disconnect_participant(&r.stage_arn, &r.participant_id, now)
    }

    /// ImportPublicKey.
    pub fn import_public_key_op(
        &mut self,
        r: ImportPublicKeyRequest,
        random_id: &[u8; 12],
    ) -> Result<ImportPublicKeyResponse, IvsError> {
        let key = self.import_public_key(&r.public_key_material, r.name, r.tags, random_id)?;
        Ok(ImportPublicKeyResponse {
            public_key: Some(key),
        })
    }

    /// GetPublicKey.
    pub fn get_public_key_op(
        &self,
        r: GetPublicKeyRequest,
    ) -> Result<GetPublicKeyResponse, IvsError> {
        Ok(GetPublicKeyResponse {
            public_key: Some(self.get_public_key(&r.arn)?),
        })
    }

    /// ListPublicKeys.
    pub fn list_public_keys_op(
        &self,
        r: ListPublicKeysRequest,
    ) -> Result<ListPublicKeysResponse, IvsError> {
        let (public_keys, next_token) =
            self.list_public_keys(r.next_token.as_deref(), r.max_results)?;
        Ok(ListPublicKeysResponse {
            public_keys,
            next_token,
        })
    }

    /// DeletePublicKey.
    pub fn delete_public_key_op(
        &mut self,
        r: DeletePublicKeyRequest,
    ) -> Result<EmptyResponse, IvsError> {
        self.delete_public_key(&r.arn)?;
        Ok(EmptyResponse {})
    }

    /// TagResource (the ARN comes from the path).
    pub fn tag_resource_op(
        &mut self,
        arn: &str,
        r: TagResourceBody,
    ) -> Result<EmptyResponse, IvsError> {
        self.tag_resource(arn, r.tags)?;
        Ok(EmptyResponse {})
    }

    /// UntagResource (the ARN from the path, the keys from the query).
    pub fn untag_resource_op(
        &mut self,
        arn: &str,
        keys: &[String],
    ) -> Result<EmptyResponse, IvsError> {
        self.untag_resource(arn, keys)?;
        Ok(EmptyResponse {})
    }

    /// ListTagsForResource (the ARN from the path).
    pub fn list_tags_op(&mut self, arn: &str) -> Result<ListTagsForResourceResponse, IvsError> {
        Ok(ListTagsForResourceResponse {
            tags: self.list_tags(arn)?,
        })
    }

    /// StartParticipantReplication.
    pub fn start_replication_op(
        &mut self,
        r: StartParticipantReplicationRequest,
        now: i64,
        random_session: &[u8; 13],
    ) -> Result<EmptyResponse, IvsError> {
        let window = r.reconnect_window_seconds.unwrap_or(0);
        if window > MAX_RECONNECT_WINDOW_SECONDS {
            return Err(validation(format!(
                "reconnectWindowSeconds must be between 0 and {MAX_RECONNECT_WINDOW_SECONDS}"
            )));
        }
        self.start_replication(
            &r.source_stage_arn,
            &r.destination_stage_arn,
            &r.participant_id,
            window,
            r.attributes,
            now,
            random_session,
        )?;
        Ok(EmptyResponse {})
    }

    /// StopParticipantReplication.
    pub fn stop_replication_op(
        &mut self,
        r: StopParticipantReplicationRequest,
        now: i64,
    ) -> Result<EmptyResponse, IvsError> {
        self.stop_replication(
            &r.source_stage_arn,
            &r.destination_stage_arn,
            &r.participant_id,
            now,
        )?;
        Ok(EmptyResponse {})
    }

    /// ListParticipantReplicas (replications past their window end first).
    pub fn list_replicas_op(
        &mut self,
        r: ListParticipantReplicasRequest,
        now: i64,
    ) -> Result<ListParticipantReplicasResponse, IvsError> {
        self.expire_replications(now);
        let (replicas, next_token) = self.list_replicas(
            &r.source_stage_arn,
            &r.participant_id,
            r.next_token.as_deref(),
            r.max_results,
        )?;
        Ok(ListParticipantReplicasResponse {
            replicas,
            next_token,
        })
    }
}
