//! Stages: create, get, update, list, delete, and the sessions they hold.

use super::*;

impl Store {
    /// An empty region.
    pub fn new(cfg: RegionConfig) -> Self {
        Self {
            cfg,
            stages: HashMap::new(),
            order: Vec::new(),
            keys: Vec::new(),
            replications: Vec::new(),
            connections: HashMap::new(),
            next_connection: 1,
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            revoked: HashSet::new(),
            media_actions: Vec::new(),
        }
    }

    /// The media-plane work decided since the last call (see [`MediaAction`]).
    pub fn take_media_actions(&mut self) -> Vec<MediaAction> {
        std::mem::take(&mut self.media_actions)
    }

    pub(super) fn endpoints(&self) -> StageEndpoints {
        StageEndpoints {
            events: Some(self.cfg.events_url.clone()),
            whip: Some(self.cfg.whip_url.clone()),
            rtmp: None,
            rtmps: None,
        }
    }

    pub(super) fn stage_view(&self, s: &StageRec) -> Stage {
        Stage {
            arn: s.arn.clone(),
            name: Some(s.name.clone()),
            active_session_id: s.session.as_ref().map(|x| x.id.clone()),
            tags: Some(s.tags.clone()),
            auto_participant_recording_configuration: s.auto_recording.clone(),
            endpoints: Some(self.endpoints()),
        }
    }

    /// The stage id of a stage ARN of this region and account, if it exists.
    pub(super) fn stage_id_of(&self, arn: &str) -> Result<String, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        if parsed.resource_type != ResourceType::Stage {
            return Err(validation(format!("not a stage ARN: {arn}")));
        }
        if parsed.region != self.cfg.region || parsed.account_id != self.cfg.account_id {
            return Err(not_found("Stage", arn));
        }
        if self.stages.contains_key(&parsed.resource_id) {
            Ok(parsed.resource_id)
        } else {
            Err(not_found("Stage", arn))
        }
    }

    pub(super) fn stage(&self, arn: &str) -> Result<&StageRec, IvsError> {
        let id = self.stage_id_of(arn)?;
        Ok(&self.stages[&id])
    }

    /// CreateStage (tokens are minted by the caller, which holds the key).
    pub fn create_stage(
        &mut self,
        name: Option<String>,
        tags: Option<Tags>,
        auto_recording: Option<ivs::AutoParticipantRecordingConfiguration>,
        random_id: &[u8; 12],
    ) -> Result<Stage, IvsError> {
        let name = name.unwrap_or_default();
        ivs::validate_name(&name).map_err(validation)?;
        let tags = tags.unwrap_or_default();
        ivs::validate_tags(&tags).map_err(validation)?;
        if self.stages.len() >= self.cfg.stage_quota {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                format!(
                    "Stage quota exceeded: at most {} stages per region",
                    self.cfg.stage_quota
                ),
            ));
        }
        let mut id = ivs::resource_id(random_id);
        while self.stages.contains_key(&id) {
            id.push('0');
        }
        let arn = Arn::stage(&self.cfg.region, &self.cfg.account_id, &id).to_string();
        let rec = StageRec {
            arn,
            name,
            tags,
            auto_recording,
            session: None,
            past_sessions: VecDeque::new(),
        };
        let view = self.stage_view(&rec);
        self.stages.insert(id.clone(), rec);
        self.order.push(id);
        Ok(view)
    }

    /// GetStage.
    pub fn get_stage(&self, arn: &str) -> Result<Stage, IvsError> {
        Ok(self.stage_view(self.stage(arn)?))
    }

    /// UpdateStage.
    pub fn update_stage(
        &mut self,
        arn: &str,
        name: Option<String>,
        auto_recording: Option<ivs::AutoParticipantRecordingConfiguration>,
    ) -> Result<Stage, IvsError> {
        if let Some(n) = &name {
            ivs::validate_name(n).map_err(validation)?;
        }
        let id = self.stage_id_of(arn)?;
        let s = self.stages.get_mut(&id).expect("checked");
        if let Some(n) = name {
            s.name = n;
        }
        if auto_recording.is_some() {
            s.auto_recording = auto_recording;
        }
        let s = self.stages[&id].clone();
        Ok(self.stage_view(&s))
    }

    /// ListStages.
    pub fn list_stages(
        &self,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<StageSummary>, Option<String>), IvsError> {
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<StageSummary> = self
            .order
            .iter()
            .map(|id| {
                let s = &self.stages[id];
                StageSummary {
                    arn: s.arn.clone(),
                    name: Some(s.name.clone()),
                    active_session_id: s.session.as_ref().map(|x| x.id.clone()),
                    tags: Some(s.tags.clone()),
                }
            })
            .collect();
        paginate(&all, next_token, page)
    }

    /// DeleteStage: ends its session (participants leave) and stops its replications. Returns
    /// the stage id and the (participant id, connection id) whose media must be closed.
    pub fn delete_stage(
        &mut self,
        arn: &str,
        now: i64,
    ) -> Result<(String, Vec<(String, u64)>), IvsError> {
        let id = self.stage_id_of(arn)?;
        let stage_arn = self.stages[&id].arn.clone();
        // Replications from or into this stage stop.
        self.stop_active_replications(
            |r| r.source_stage_arn == stage_arn || r.destination_stage_arn == stage_arn,
            now,
        );
        let mut stage = self.stages.remove(&id).expect("checked");
        self.order.retain(|x| x != &id);
        let mut to_close = Vec::new();
        if let Some(session) = stage.session.as_mut() {
            for p in session.participants.iter_mut() {
                if p.state == ParticipantState::Connected {
                    Self::mark_left(p, now);
                    if let Some(c) = self.connections.remove(&p.id) {
                        to_close.push((p.id.clone(), c.id));
                    }
                }
            }
        }
        self.revoked.retain(|(sid, _)| sid != &id);
        for (_, c) in &to_close {
            self.record_end(*c, EndReason::StageDeleted);
        }
        Ok((id, to_close))
    }

    pub(super) fn record_end(&mut self, connection: u64, reason: EndReason) {
        if self.ended.insert(connection, reason).is_none() {
            self.ended_order.push_back(connection);
        }
        while self.ended_order.len() > ENDED_KEPT {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Whether connection `connection` of `pid` is live; if not, why it ended, when that is
    /// still remembered.
    pub fn connection_status(&self, pid: &str, connection: u64) -> Result<(), Option<EndReason>> {
        match self.connections.get(pid) {
            Some(c) if c.id == connection => Ok(()),
            _ => Err(self.ended.get(&connection).copied()),
        }
    }

    /// The participant `pid` of `stage_id`'s current session, if both exist.
    pub(super) fn participant_mut(
        &mut self,
        stage_id: &str,
        pid: &str,
    ) -> Option<&mut ParticipantRec> {
        self.stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
            .and_then(|s| s.find_mut(pid))
    }

    pub(super) fn mark_left(p: &mut ParticipantRec, now: i64) {
        if p.published {
            push_event(p, event(EventName::PublishStopped, &p.id.clone(), now));
        } else if p.role == Role::Subscriber {
            push_event(p, event(EventName::SubscribeStopped, &p.id.clone(), now));
        }
        p.state = ParticipantState::Disconnected;
        push_event(p, event(EventName::Left, &p.id.clone(), now));
    }

    /// Ends a stage's session when nobody is connected any more.
    pub(super) fn maybe_end_session(&mut self, stage_id: &str) {
        if let Some(s) = self.stages.get_mut(stage_id) {
            if s.session.as_ref().is_some_and(|x| !x.any_connected()) {
                let ended = s.session.take().expect("checked");
                s.past_sessions.push_front(ended);
                s.past_sessions.truncate(PAST_SESSIONS_KEPT);
            }
        }
    }

    pub(super) fn session_of<'a>(s: &'a StageRec, session_id: &str) -> Option<&'a SessionRec> {
        s.session
            .iter()
            .chain(s.past_sessions.iter())
            .find(|x| x.id == session_id)
    }

    /// Counts for `/_local/stats`.
    pub fn counts(&self) -> serde_json::Value {
        let sessions = self.stages.values().filter(|s| s.session.is_some()).count();
        let (mut publishers, mut subscribers) = (0, 0);
        for s in self.stages.values().filter_map(|s| s.session.as_ref()) {
            publishers += s.connected(Role::Publisher);
            subscribers += s.connected(Role::Subscriber);
        }
        serde_json::json!({
            "stages": self.stages.len(),
            "activeSessions": sessions,
            "publicKeys": self.keys.len(),
            "connectedPublishers": publishers,
            "connectedSubscribers": subscribers,
            "mediaConnections": self.connections.len(),
            "activeReplications": self.replications.iter().filter(|r| r.state == ReplicationState::Active).count(),
        })
    }
}
