//! Participant replication between stages: start, stop, expiry and the replica listing.

use super::*;

impl Store {
    /// StartParticipantReplication: the participant (a connected publisher of the source)
    /// appears in the destination as a REPLICA publisher (and is SOURCE in its own stage).
    /// The replica takes a slot of the region's concurrent-publishers quota (402 when none is
    /// left, as for a full destination).
    #[allow(clippy::too_many_arguments)]
    pub fn start_replication(
        &mut self,
        source_arn: &str,
        dest_arn: &str,
        pid: &str,
        reconnect_window_seconds: u32,
        attributes: Option<Attributes>,
        now: i64,
        random_session: &[u8; 13],
    ) -> Result<(), IvsError> {
        self.expire_replications(now);
        if let Some(a) = &attributes {
            if ivs::attributes_size(a) > ivs::MAX_ATTRIBUTES_BYTES {
                return Err(validation("attributes must be at most 1 KB in total"));
            }
        }
        let src_id = self.stage_id_of(source_arn)?;
        let dst_id = self.stage_id_of(dest_arn)?;
        if src_id == dst_id {
            return Err(validation(
                "sourceStageArn and destinationStageArn must differ",
            ));
        }
        let (source_session_id, source_p) = {
            let s = &self.stages[&src_id];
            let session = s.session.as_ref();
            let p = session
                .and_then(|x| x.find(pid))
                .filter(|p| p.state == ParticipantState::Connected && p.role == Role::Publisher)
                .ok_or_else(|| not_found("Publishing participant in the source stage", pid))?;
            (session.expect("found in it").id.clone(), p.clone())
        };
        if source_p.replication_type == ReplicationType::Replica {
            return Err(validation("A replica cannot be replicated"));
        }
        let active =
            |r: &&ReplicationRec| r.state == ReplicationState::Active && r.participant_id == pid;
        if self
            .replications
            .iter()
            .filter(active)
            .any(|r| r.source_stage_arn == source_arn && r.destination_stage_arn == dest_arn)
        {
            return Err(IvsError::new(
                ErrorKind::Conflict,
                "This participant is already replicated to the destination stage",
            ));
        }
        if self.replications.iter().filter(active).count() >= MAX_REPLICATIONS_PER_PARTICIPANT {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                "A participant can be replicated to at most 5 stages",
            ));
        }
        let cap = self.cfg.publisher_cap;
        if self.stages[&dst_id]
            .session
            .as_ref()
            .map_or(0, |s| s.connected(Role::Publisher))
            >= cap
        {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                format!("The destination stage already has {cap} publishers"),
            ));
        }
        // The replica is one more publisher in the region (see `quotas`).
        if let Err(AdmitError::QuotaExceeded { quota, limit }) =
            self.check_region_quota(Role::Publisher, 1)
        {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                quota.message(limit),
            ));
        }
        let mut merged = source_p.attributes.clone().unwrap_or_default();
        merged.extend(attributes.unwrap_or_default());
        self.replications.push(ReplicationRec {
            source_stage_arn: source_arn.to_string(),
            source_session_id,
            destination_stage_arn: dest_arn.to_string(),
            destination_session_id: String::new(),
            participant_id: pid.to_string(),
            state: ReplicationState::Active,
            reconnect_window_seconds: i64::from(reconnect_window_seconds),
            source_left_at: None,
            attributes: merged,
        });
        let index = self.replications.len() - 1;
        self.enter_replica(index, &source_p, now, random_session);
        self.media_actions.push(MediaAction::Start {
            participant_id: pid.to_string(),
            source_stage: src_id,
            dest_stage: dst_id,
        });
        Ok(())
    }

    /// Puts the replica of replication `index` into its destination stage as a connected
    /// REPLICA publisher (opening a session there if none is active), with the source's
    /// `published` flag, and records REPLICATION_STARTED on both sides.
    pub(super) fn enter_replica(
        &mut self,
        index: usize,
        source_p: &ParticipantRec,
        now: i64,
        random_session: &[u8; 13],
    ) {
        let rep = self.replications[index].clone();
        let pid = rep.participant_id.as_str();
        let Some(dst_id) = ivs::stage_id_from_arn(&rep.destination_stage_arn).map(str::to_string)
        else {
            return;
        };
        let Some(dst) = self.stages.get_mut(&dst_id) else {
            return;
        };
        let session = dst.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let destination_session_id = session.id.clone();
        let mut replica = ParticipantRec {
            id: pid.to_string(),
            user_id: source_p.user_id.clone(),
            attributes: Some(rep.attributes.clone()),
            role: Role::Publisher,
            state: ParticipantState::Connected,
            media: true,
            first_join_time: now,
            published: source_p.published,
            events: Vec::new(),
            replication_type: ReplicationType::Replica,
            replication_state: Some(ReplicationState::Active),
            source_stage_arn: Some(rep.source_stage_arn.clone()),
            source_session_id: Some(rep.source_session_id.clone()),
        };
        // The same participant in the same session again (a source that came back): one row,
        // its history kept.
        if let Some(old) = session.participants.iter().position(|p| p.id == pid) {
            let old = session.participants.remove(old);
            replica.first_join_time = old.first_join_time;
            replica.events = old.events;
        }
        push_event(&mut replica, event(EventName::Joined, pid, now));
        let mut started = event(EventName::ReplicationStarted, pid, now);
        started.destination_stage_arn = Some(rep.destination_stage_arn.clone());
        started.destination_session_id = Some(destination_session_id.clone());
        started.replica = Some(true);
        push_event(&mut replica, started.clone());
        if replica.published {
            push_event(&mut replica, event(EventName::PublishStarted, pid, now));
        }
        session.participants.push(replica);
        self.replications[index].destination_session_id = destination_session_id;
        if let Some(p) = ivs::stage_id_from_arn(&rep.source_stage_arn)
            .and_then(|id| self.participant_mut(id, pid))
        {
            p.replication_type = ReplicationType::Source;
            p.replication_state = Some(ReplicationState::Active);
            started.replica = Some(false);
            push_event(p, started);
        }
    }

    /// A publisher connected to `stage_arn` as `pid`: replications waiting for it (it left
    /// within their reconnect window) resume, and it appears again in their destinations.
    pub(super) fn source_came_back(
        &mut self,
        stage_arn: &str,
        pid: &str,
        session_id: &str,
        now: i64,
        random_session: &[u8; 13],
    ) {
        self.expire_replications(now);
        let waiting: Vec<usize> = (0..self.replications.len())
            .filter(|&i| {
                let r = &self.replications[i];
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
                    && r.source_left_at.is_some()
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let Some(source_p) = ivs::stage_id_from_arn(stage_arn)
            .and_then(|id| self.stages.get(id))
            .and_then(|s| s.session.as_ref())
            .and_then(|s| s.find(pid))
            .cloned()
        else {
            return;
        };
        for i in waiting {
            let r = &mut self.replications[i];
            r.source_left_at = None;
            r.source_session_id = session_id.to_string();
            // It publishes again once its media flows (PUBLISH_STARTED in both stages).
            let mut fresh = source_p.clone();
            fresh.published = false;
            self.enter_replica(i, &fresh, now, random_session);
        }
    }

    /// Ends the replications whose source left more than their reconnect window ago. Called
    /// by the operations that read or change replications, and by ivs-local's clock tick.
    pub fn expire_replications(&mut self, now: i64) {
        self.stop_active_replications(
            |r| {
                r.source_left_at
                    .is_some_and(|t| now >= t + r.reconnect_window_seconds)
            },
            now,
        );
    }

    /// Stops every active replication that `which` selects.
    pub(super) fn stop_active_replications(
        &mut self,
        which: impl Fn(&ReplicationRec) -> bool,
        now: i64,
    ) {
        let selected: Vec<(String, String, String)> = self
            .replications
            .iter()
            .filter(|r| r.state == ReplicationState::Active && which(r))
            .map(|r| {
                (
                    r.source_stage_arn.clone(),
                    r.destination_stage_arn.clone(),
                    r.participant_id.clone(),
                )
            })
            .collect();
        for (src, dst, pid) in selected {
            self.stop_replication_inner(&src, &dst, &pid, now);
        }
    }

    pub(super) fn stop_replication_inner(
        &mut self,
        src: &str,
        dst: &str,
        pid: &str,
        now: i64,
    ) -> bool {
        let Some(rep) = self.replications.iter_mut().find(|r| {
            r.state == ReplicationState::Active
                && r.source_stage_arn == src
                && r.destination_stage_arn == dst
                && r.participant_id == pid
        }) else {
            return false;
        };
        rep.state = ReplicationState::Stopped;
        rep.source_left_at = None;
        let dest_session = rep.destination_session_id.clone();
        if let Some(dst_id) = ivs::stage_id_from_arn(dst) {
            self.media_actions.push(MediaAction::Stop {
                participant_id: pid.to_string(),
                dest_stage: dst_id.to_string(),
            });
        }
        let mut stopped = event(EventName::ReplicationStopped, pid, now);
        stopped.destination_stage_arn = Some(dst.to_string());
        stopped.destination_session_id = Some(dest_session);
        if let Some(id) = ivs::stage_id_from_arn(dst).map(str::to_string) {
            if let Some(p) = self.participant_mut(&id, pid) {
                if p.state == ParticipantState::Connected {
                    p.replication_state = Some(ReplicationState::Stopped);
                    let mut e = stopped.clone();
                    e.replica = Some(true);
                    push_event(p, e);
                    Self::mark_left(p, now);
                }
            }
            self.maybe_end_session(&id);
        }
        let still_active = self.replications.iter().any(|r| {
            r.state == ReplicationState::Active
                && r.source_stage_arn == src
                && r.participant_id == pid
        });
        if let Some(id) = ivs::stage_id_from_arn(src).map(str::to_string) {
            if let Some(p) = self.participant_mut(&id, pid) {
                stopped.replica = Some(false);
                push_event(p, stopped);
                if !still_active {
                    p.replication_state = Some(ReplicationState::Stopped);
                }
            }
        }
        true
    }

    /// StopParticipantReplication.
    pub fn stop_replication(
        &mut self,
        source_arn: &str,
        dest_arn: &str,
        pid: &str,
        now: i64,
    ) -> Result<(), IvsError> {
        self.expire_replications(now);
        self.stage_id_of(source_arn)?;
        self.stage_id_of(dest_arn)?;
        if self.stop_replication_inner(source_arn, dest_arn, pid, now) {
            Ok(())
        } else {
            Err(not_found("Active replication of participant", pid))
        }
    }

    /// ListParticipantReplicas.
    pub fn list_replicas(
        &self,
        source_arn: &str,
        pid: &str,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<ParticipantReplica>, Option<String>), IvsError> {
        Arn::parse(source_arn).map_err(|e| validation(e.to_string()))?;
        let page = ivs::page_size(max_results, 50, 50).map_err(validation)? as usize;
        let all: Vec<ParticipantReplica> = self
            .replications
            .iter()
            .filter(|r| r.source_stage_arn == source_arn && r.participant_id == pid)
            .map(|r| ParticipantReplica {
                source_stage_arn: r.source_stage_arn.clone(),
                participant_id: r.participant_id.clone(),
                source_session_id: r.source_session_id.clone(),
                destination_stage_arn: r.destination_stage_arn.clone(),
                destination_session_id: r.destination_session_id.clone(),
                replication_state: match r.state {
                    ReplicationState::Active => "ACTIVE".into(),
                    ReplicationState::Stopped => "STOPPED".into(),
                },
            })
            .collect();
        paginate(&all, next_token, page)
    }
}
