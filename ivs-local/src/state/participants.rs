//! Participants: admission, media connections and their ends, disconnection, and the
//! participant and event listings.

use super::*;

impl Store {
    /// Admits a verified token to a stage's media (before the media plane answers): checks
    /// revocation, the stage's caps and the region's quotas, ends the participant's older connection if it has one (one
    /// connection per participant id, the newest wins, as IVS does), opens a session if none
    /// is active, and records the participant as CONNECTED with a JOINED event.
    pub fn admit(
        &mut self,
        claims: &Claims,
        role: Role,
        now: i64,
        random_session: &[u8; 13],
    ) -> Result<Admitted, AdmitError> {
        let stage_id = claims.topic.clone();
        let Some(stage) = self.stages.get(&stage_id) else {
            return Err(AdmitError::StageNotFound);
        };
        if stage.arn != claims.resource {
            return Err(AdmitError::StageNotFound);
        }
        if self
            .revoked
            .contains(&(stage_id.clone(), claims.jti.clone()))
        {
            return Err(AdmitError::Revoked);
        }
        let older = self.connections.get(&claims.jti).cloned();
        let cap = match role {
            Role::Publisher => self.cfg.publisher_cap,
            Role::Subscriber => self.cfg.subscriber_cap,
        };
        // The older connection's seat is the new one's when it has the same role here.
        let reused_seat = older
            .as_ref()
            .is_some_and(|c| c.stage_id == stage_id && c.role == role);
        let now_connected = stage
            .session
            .as_ref()
            .map_or(0, |s| s.connected(role))
            .saturating_sub(usize::from(reused_seat));
        // The region's quota: the older connection's slot is the new one's when it has the
        // same role anywhere; a publisher's replicas waiting for it come back with it.
        let mut more = usize::from(!older.as_ref().is_some_and(|c| c.role == role));
        if role == Role::Publisher {
            more += self.waiting_replicas(&stage.arn, &claims.jti, now);
        }
        let refused = if now_connected >= cap {
            Err(AdmitError::AtCapacity { role, cap })
        } else {
            self.check_region_quota(role, more)
        };
        if let Err(e) = refused {
            self.record_join_refused(&stage_id, &claims.jti, now);
            return Err(e);
        }
        if let Some(old) = &older {
            // Same stage: the session goes on with the new connection.
            self.leave(&old.stage_id, &claims.jti, now, old.stage_id != stage_id);
            self.record_end(old.id, EndReason::TokenReused);
        }
        let stage = self.stages.get_mut(&stage_id).expect("checked");
        let session = stage.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let mut rec = ParticipantRec {
            id: claims.jti.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            role,
            state: ParticipantState::Connected,
            media: true,
            first_join_time: now,
            published: false,
            events: Vec::new(),
            replication_type: ReplicationType::None,
            replication_state: None,
            source_stage_arn: None,
            source_session_id: None,
        };
        // A token that connects again (after leaving) is the same participant: keep its
        // first join time and history. One that joined by its events socket already has its
        // JOINED event.
        let mut joined = false;
        if let Some(old) = session.participants.iter().position(|p| p.id == claims.jti) {
            let old = session.participants.remove(old);
            joined = old.state == ParticipantState::Connected && !old.media;
            rec.first_join_time = old.first_join_time;
            rec.events = old.events;
            rec.published = old.published;
        }
        if !joined {
            push_event(&mut rec, event(EventName::Joined, &claims.jti, now));
        }
        session.participants.push(rec);
        let session_id = session.id.clone();
        let stage_arn = stage.arn.clone();
        let connection = self.next_connection;
        self.next_connection += 1;
        self.connections.insert(
            claims.jti.clone(),
            Connection {
                stage_id,
                role,
                id: connection,
                connected: false,
            },
        );
        if role == Role::Publisher {
            self.source_came_back(&stage_arn, &claims.jti, &session_id, now, random_session);
        }
        Ok(Admitted {
            session_id,
            connection,
            replaced: older.map(|c| c.id),
        })
    }

    /// The media plane refused the offer after [`admit`](Self::admit): the join failed.
    pub fn join_failed(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self.connections.get(pid).is_none_or(|c| c.id != connection) {
            return;
        }
        self.connections.remove(pid);
        self.record_end(connection, EndReason::JoinFailed);
        if let Some(session) = self
            .stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
        {
            if let Some(p) = session.find_mut(pid) {
                let mut e = event(EventName::JoinError, pid, now);
                e.error_code = Some("INVALID_INPUT".into());
                push_event(p, e);
                p.state = ParticipantState::Disconnected;
                push_event(p, event(EventName::Left, pid, now));
            }
        }
        self.maybe_end_session(stage_id);
    }

    /// The active connection of a participant id.
    pub fn connection(&self, pid: &str) -> Option<&Connection> {
        self.connections.get(pid)
    }

    /// The events socket of a verified token opened: the participant joins the stage (its
    /// session opens if none is active) without a media session yet, unless it is already
    /// connected. It counts against no cap until it publishes or subscribes (IVS refuses at
    /// capacity on WHIP, not on the socket).
    pub fn socket_joined(&mut self, claims: &Claims, now: i64, random_session: &[u8; 13]) {
        let Some(stage) = self.stages.get_mut(&claims.topic) else {
            return;
        };
        if stage.arn != claims.resource {
            return;
        }
        let session = stage.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let mut rec = ParticipantRec {
            id: claims.jti.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            role: if claims.capabilities.allow_publish {
                Role::Publisher
            } else {
                Role::Subscriber
            },
            state: ParticipantState::Connected,
            media: false,
            first_join_time: now,
            published: false,
            events: Vec::new(),
            replication_type: ReplicationType::None,
            replication_state: None,
            source_stage_arn: None,
            source_session_id: None,
        };
        if let Some(i) = session.participants.iter().position(|p| p.id == claims.jti) {
            if session.participants[i].state == ParticipantState::Connected {
                return;
            }
            let old = session.participants.remove(i);
            rec.first_join_time = old.first_join_time;
            rec.events = old.events;
        }
        push_event(&mut rec, event(EventName::Joined, &claims.jti, now));
        session.participants.push(rec);
    }

    /// The events socket of `pid` closed and it has no media session (the caller ended that
    /// first): if it was joined by its socket only, it leaves. Returns whether it did.
    pub fn socket_left(&mut self, stage_id: &str, pid: &str, now: i64) -> bool {
        let left = match self.participant_mut(stage_id, pid) {
            Some(p) if p.state == ParticipantState::Connected && !p.media => {
                p.state = ParticipantState::Disconnected;
                push_event(p, event(EventName::Left, pid, now));
                true
            }
            _ => false,
        };
        if left {
            self.maybe_end_session(stage_id);
        }
        left
    }

    /// Whether DisconnectParticipant revoked `pid` on `stage_id`.
    pub fn is_revoked(&self, stage_id: &str, pid: &str) -> bool {
        self.revoked
            .contains(&(stage_id.to_string(), pid.to_string()))
    }

    /// Whether stage `stage_id` exists with ARN `arn`.
    pub fn stage_exists(&self, stage_id: &str, arn: &str) -> bool {
        self.stages.get(stage_id).is_some_and(|s| s.arn == arn)
    }

    /// The connected publishers of a stage's active session (its own and replicas), in join
    /// order: what the events WebSocket's STAGE_STATE lists.
    pub fn stage_publishers(&self, stage_id: &str) -> Vec<StagePublisher> {
        let Some(session) = self.stages.get(stage_id).and_then(|s| s.session.as_ref()) else {
            return Vec::new();
        };
        session
            .participants
            .iter()
            .filter(|p| p.state == ParticipantState::Connected && p.role == Role::Publisher)
            .map(|p| StagePublisher {
                id: p.id.clone(),
                user_id: p.user_id.clone(),
                attributes: p.attributes.clone().unwrap_or_default(),
                published: p.published,
            })
            .collect()
    }

    /// Media event: ICE/DTLS up. A subscriber starts receiving the stage's first publisher.
    pub fn on_connected(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        match self.connections.get_mut(pid) {
            Some(c) if c.id == connection => c.connected = true,
            // A replaced connection's late event.
            _ => return,
        }
        let Some(session) = self
            .stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
        else {
            return;
        };
        let host = session
            .participants
            .iter()
            .find(|p| p.role == Role::Publisher && p.state == ParticipantState::Connected)
            .map(|p| p.id.clone());
        if let Some(p) = session.find_mut(pid) {
            if p.role == Role::Subscriber && p.state == ParticipantState::Connected {
                let mut e = event(EventName::SubscribeStarted, pid, now);
                e.remote_participant_id = host;
                push_event(p, e);
            }
        }
    }

    /// Media event: the first media from a publisher.
    pub fn on_published(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self.connections.get(pid).is_none_or(|c| c.id != connection) {
            return;
        }
        let Some(stage) = self.stages.get_mut(stage_id) else {
            return;
        };
        let stage_arn = stage.arn.clone();
        if let Some(p) = stage.session.as_mut().and_then(|s| s.find_mut(pid)) {
            if p.state == ParticipantState::Connected {
                p.published = true;
                push_event(p, event(EventName::PublishStarted, pid, now));
            }
        }
        // Replicas of this participant publish too.
        let dests: Vec<String> = self
            .replications
            .iter()
            .filter(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
            })
            .map(|r| r.destination_stage_arn.clone())
            .collect();
        for d in dests {
            if let Some(id) = ivs::stage_id_from_arn(&d).map(str::to_string) {
                if let Some(p) = self.participant_mut(&id, pid) {
                    p.published = true;
                    push_event(p, event(EventName::PublishStarted, pid, now));
                }
            }
        }
    }

    /// Media event: the media plane ended a session (peer gone, ICE timeout, or after one of
    /// the closes below, which the registry already recorded: then it is not the current
    /// connection any more and nothing happens).
    pub fn media_disconnected(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self
            .connections
            .get(pid)
            .is_some_and(|c| c.id == connection && c.stage_id == stage_id)
        {
            self.on_disconnected(stage_id, pid, now);
            self.record_end(connection, EndReason::Left);
        }
    }

    /// The registry ends a participant's connection on `stage_id` now (and only connection
    /// `only` when given), for `reason`; the caller tells the media plane to close it. Returns
    /// the ended connection's id, or None if there was no such connection.
    pub fn end_connection(
        &mut self,
        stage_id: &str,
        pid: &str,
        only: Option<u64>,
        reason: EndReason,
        now: i64,
    ) -> Option<u64> {
        let c = self.connections.get(pid)?;
        if c.stage_id != stage_id || only.is_some_and(|id| id != c.id) {
            return None;
        }
        let id = c.id;
        self.on_disconnected(stage_id, pid, now);
        self.record_end(id, reason);
        Some(id)
    }

    /// The ICE setup deadline of connection `connection` passed: if it is still current and
    /// never connected, it ends (its seat is free). Returns whether it did.
    pub fn expire_setup(&mut self, pid: &str, connection: u64, now: i64) -> bool {
        let Some(c) = self.connections.get(pid) else {
            return false;
        };
        if c.id != connection || c.connected {
            return false;
        }
        let stage_id = c.stage_id.clone();
        self.end_connection(
            &stage_id,
            pid,
            Some(connection),
            EndReason::IceSetupTimeout,
            now,
        )
        .is_some()
    }

    pub(super) fn on_disconnected(&mut self, stage_id: &str, pid: &str, now: i64) {
        self.leave(stage_id, pid, now, true);
    }

    /// The participant's connection ends: it leaves (and its replicas with it). Its stage's
    /// session ends with its last participant, unless `end_session` is false (a newer
    /// connection of the same participant is joining it at once).
    pub(super) fn leave(&mut self, stage_id: &str, pid: &str, now: i64, end_session: bool) {
        let Some(conn) = self.connections.get(pid) else {
            return;
        };
        if conn.stage_id != stage_id {
            return;
        }
        self.connections.remove(pid);
        let stage_arn = match self.stages.get_mut(stage_id) {
            Some(stage) => {
                if let Some(p) = stage.session.as_mut().and_then(|s| s.find_mut(pid)) {
                    if p.state == ParticipantState::Connected {
                        Self::mark_left(p, now);
                    }
                }
                stage.arn.clone()
            }
            None => return,
        };
        // Its replicas leave their stages with it. A replication without a reconnect window
        // ends now; one with a window waits for the source (see `expire_replications`).
        let reps: Vec<(String, i64)> = self
            .replications
            .iter()
            .filter(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
                    && r.source_left_at.is_none()
            })
            .map(|r| (r.destination_stage_arn.clone(), r.reconnect_window_seconds))
            .collect();
        for (dst, window) in reps {
            if window == 0 {
                self.stop_replication_inner(&stage_arn, &dst, pid, now);
                continue;
            }
            if let Some(r) = self.replications.iter_mut().find(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.destination_stage_arn == dst
                    && r.participant_id == pid
            }) {
                r.source_left_at = Some(now);
            }
            if let Some(id) = ivs::stage_id_from_arn(&dst).map(str::to_string) {
                if let Some(p) = self.participant_mut(&id, pid) {
                    if p.state == ParticipantState::Connected {
                        Self::mark_left(p, now);
                    }
                }
                self.maybe_end_session(&id);
            }
        }
        if end_session {
            self.maybe_end_session(stage_id);
        }
    }

    /// DisconnectParticipant: revokes the participant's token on this stage and returns its
    /// media connection to close, if it had one.
    pub fn disconnect_participant(
        &mut self,
        stage_arn: &str,
        pid: &str,
        now: i64,
    ) -> Result<Option<u64>, IvsError> {
        let stage_id = self.stage_id_of(stage_arn)?;
        let connected = self.stages[&stage_id]
            .session
            .as_ref()
            .and_then(|s| s.find(pid))
            .is_some_and(|p| p.state == ParticipantState::Connected);
        if !connected {
            return Err(IvsError::new(
                ErrorKind::ResourceNotFound,
                format!("Participant not found: {pid}"),
            ));
        }
        self.revoked.insert((stage_id.clone(), pid.to_string()));
        let had_media = self.end_connection(
            &stage_id,
            pid,
            None,
            EndReason::ParticipantDisconnected,
            now,
        );
        // Joined by its events socket only, it just leaves; a replica's replication stops.
        if had_media.is_none() && !self.socket_left(&stage_id, pid, now) {
            let src = self.stages[&stage_id]
                .session
                .as_ref()
                .and_then(|s| s.find(pid))
                .and_then(|p| p.source_stage_arn.clone());
            if let Some(src) = src {
                let arn = self.stages[&stage_id].arn.clone();
                self.stop_replication_inner(&src, &arn, pid, now);
            }
        }
        Ok(had_media)
    }

    pub(super) fn summary(p: &ParticipantRec) -> ParticipantSummary {
        ParticipantSummary {
            participant_id: Some(p.id.clone()),
            user_id: p.user_id.clone(),
            state: Some(p.state),
            first_join_time: Some(iso(p.first_join_time)),
            published: Some(p.published),
            recording_state: Some("DISABLED".into()),
            replication_type: Some(p.replication_type),
            replication_state: p.replication_state,
            source_stage_arn: p.source_stage_arn.clone(),
            source_session_id: p.source_session_id.clone(),
        }
    }

    /// ListParticipants (an unknown stage or session lists nothing, as the model has no
    /// not-found error for it).
    #[allow(clippy::too_many_arguments)]
    pub fn list_participants(
        &self,
        stage_arn: &str,
        session_id: &str,
        user_id: Option<&str>,
        published: Option<bool>,
        state: Option<ParticipantState>,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<ParticipantSummary>, Option<String>), IvsError> {
        Arn::parse(stage_arn).map_err(|e| validation(e.to_string()))?;
        let filters = [user_id.is_some(), published.is_some(), state.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if filters > 1 {
            return Err(validation(
                "Only one of filterByUserId, filterByPublished, filterByState can be provided",
            ));
        }
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<ParticipantSummary> = self
            .stage(stage_arn)
            .ok()
            .and_then(|s| Self::session_of(s, session_id))
            .map(|session| {
                session
                    .participants
                    .iter()
                    .filter(|p| user_id.is_none_or(|u| p.user_id.as_deref() == Some(u)))
                    .filter(|p| published.is_none_or(|b| p.published == b))
                    .filter(|p| state.is_none_or(|st| p.state == st))
                    .map(Self::summary)
                    .collect()
            })
            .unwrap_or_default();
        paginate(&all, next_token, page)
    }

    /// GetParticipant.
    pub fn get_participant(
        &self,
        stage_arn: &str,
        session_id: &str,
        pid: &str,
    ) -> Result<Participant, IvsError> {
        let stage = self.stage(stage_arn)?;
        let session =
            Self::session_of(stage, session_id).ok_or_else(|| not_found("Session", session_id))?;
        let p = session
            .find(pid)
            .ok_or_else(|| not_found("Participant", pid))?;
        Ok(Participant {
            participant_id: Some(p.id.clone()),
            user_id: p.user_id.clone(),
            state: Some(p.state),
            first_join_time: Some(iso(p.first_join_time)),
            attributes: Some(p.attributes.clone().unwrap_or_default()),
            published: Some(p.published),
            sdk_version: Some("ivs-local".into()),
            recording_state: Some("DISABLED".into()),
            protocol: Some(ParticipantProtocol::Whip),
            replication_type: Some(p.replication_type),
            replication_state: p.replication_state,
            source_stage_arn: p.source_stage_arn.clone(),
            source_session_id: p.source_session_id.clone(),
            ..Participant::default()
        })
    }

    /// ListParticipantEvents.
    pub fn list_participant_events(
        &self,
        stage_arn: &str,
        session_id: &str,
        pid: &str,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<Event>, Option<String>), IvsError> {
        Arn::parse(stage_arn).map_err(|e| validation(e.to_string()))?;
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all = self
            .stage(stage_arn)
            .ok()
            .and_then(|s| Self::session_of(s, session_id))
            .and_then(|s| s.find(pid))
            .map(|p| p.events.clone())
            .unwrap_or_default();
        paginate(&all, next_token, page)
    }
}
