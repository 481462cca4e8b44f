//! One session: its state, adding and ending it, and draining its `Rtc`'s output.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::{Event, IceConnectionState, Output, Rtc};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use super::stages::{Feed, Stage};
use super::stats::Traffic;
use super::{Engine, PeerId, Work};
use crate::keyframe::KeyframeThrottle;
use crate::{MediaError, MediaEvent, Role, Session};

pub(super) struct Peer {
    pub(super) id: PeerId,
    pub(super) stage: Arc<str>,
    pub(super) participant_id: String,
    pub(super) role: Role,
    /// The caller's connection id (see [`Session::connection`]).
    pub(super) connection: u64,
    pub(super) rtc: Rtc,
    pub(super) next_timeout: Instant,
    pub(super) connected: bool,
    pub(super) published: bool,
    /// Set once the session is known dead and queued for removal.
    pub(super) ended: bool,
    /// The first audio and video m-lines (a publisher's incoming, a subscriber's outgoing).
    audio_mid: Option<Mid>,
    pub(super) video_mid: Option<Mid>,
    /// With simulcast, the one layer forwarded (the first seen).
    pub(super) video_rid: Option<Rid>,
    /// Subscriber: the publisher's payload type → ours, learned on the first frame of each.
    pub(super) pt_map: Vec<(Pt, Pt)>,
    /// Publisher: keyframe requests towards it, from every stage that shows it (its own and
    /// the destinations of its replications), coalesced to one per interval.
    pub(super) keyframes: KeyframeThrottle,
    pub(super) traffic: Traffic,
}

impl Peer {
    pub(super) fn mid_for(&self, kind: MediaKind) -> Option<Mid> {
        match kind {
            MediaKind::Audio => self.audio_mid,
            MediaKind::Video => self.video_mid,
        }
    }

    pub(super) fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        if Some(mid) == self.audio_mid {
            Some(MediaKind::Audio)
        } else if Some(mid) == self.video_mid {
            Some(MediaKind::Video)
        } else {
            None
        }
    }
}

impl Engine {
    pub(super) fn add(
        &mut self,
        session: Session,
        rtc: Rtc,
        socket: &UdpSocket,
        now: Instant,
    ) -> Result<(), MediaError> {
        if let Some(&old) = self.by_participant.get(&session.participant_id) {
            // One session per participant: the newest wins. The old one is closed and removed
            // now, so its Disconnected event precedes every event of the new one.
            self.end(old, socket);
            self.remove(old, socket, now);
        }
        let id = self.next_id;
        self.next_id += 1;
        let stage_key = self.stage_key(&session.stage_id);
        let stage = self.stages.entry(stage_key.clone()).or_default();
        match session.role {
            Role::Publisher => stage.feeds.push(Feed::Local(id)),
            Role::Subscriber => stage.subscribers.push(id),
        }
        debug!(
            stage = %stage_key, participant = %session.participant_id, role = ?session.role,
            "media session added"
        );
        self.by_participant
            .insert(session.participant_id.clone(), id);
        let mut peer = Peer {
            id,
            stage: stage_key.clone(),
            participant_id: session.participant_id,
            role: session.role,
            connection: session.connection,
            rtc,
            next_timeout: now,
            connected: false,
            published: false,
            ended: false,
            audio_mid: None,
            video_mid: None,
            video_rid: None,
            pt_map: Vec::new(),
            keyframes: KeyframeThrottle::default(),
            traffic: Traffic::default(),
        };
        // accept_offer was the last mutation: drain it (MediaAdded events: the m-lines).
        drain(&mut peer, socket, &mut self.work, &mut self.send_drops);
        let (role, participant_id) = (peer.role, peer.participant_id.clone());
        self.peers.insert(id, peer);
        self.stats_dirty = true;
        if role == Role::Publisher {
            // A new host for subscribers of its stage (and of the stages it is replicated into,
            // when it comes back within the reconnect window) that may have watched another.
            self.refresh_sources_of(&stage_key, &participant_id, socket, now);
        }
        Ok(())
    }

    /// Closes a session gracefully (RTCP BYE, DTLS close_notify) and queues its removal.
    pub(super) fn end(&mut self, id: PeerId, socket: &UdpSocket) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.rtc.is_alive() && peer.rtc.close().is_ok() {
            drain(peer, socket, &mut self.work, &mut self.send_drops);
        }
        peer.rtc.disconnect();
        drain(peer, socket, &mut self.work, &mut self.send_drops);
    }

    pub(super) fn connected(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        info!(stage = %peer.stage, participant = %peer.participant_id, role = ?peer.role, "connected");
        self.emit(MediaEvent::Connected {
            stage_id: peer.stage.to_string(),
            participant_id: peer.participant_id.clone(),
            connection: peer.connection,
        });
        // A new viewer cannot decode until the next keyframe: ask for one now. So can a source
        // that (re)connects to viewers already waiting, in its stage or in replica stages.
        self.want_keyframe(id, socket, now);
    }

    /// Removes a dead session from every index and reports it.
    pub(super) fn remove(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if self.by_participant.get(&peer.participant_id) == Some(&id) {
            self.by_participant.remove(&peer.participant_id);
        }
        self.by_addr.retain(|_, p| *p != id);
        self.retired.add(&peer.traffic);
        self.stats_dirty = true;
        info!(stage = %peer.stage, participant = %peer.participant_id, role = ?peer.role, "disconnected");
        if let Some(stage) = self.stages.get_mut(&peer.stage) {
            stage.feeds.retain(|f| *f != Feed::Local(id));
            stage.subscribers.retain(|p| *p != id);
            stage.retired.add(&peer.traffic);
        }
        if peer.role == Role::Publisher {
            // The next publisher in join order becomes what subscribers see, here and in the
            // stages it is replicated into (where it comes back if it reconnects in time).
            self.refresh_sources_of(&peer.stage, &peer.participant_id, socket, now);
        }
        if self.stages.get(&peer.stage).is_some_and(Stage::is_empty) {
            self.stages.remove(&peer.stage);
        }
        // Whoever handles the event sees stats without the session.
        self.publish_stats(now);
        self.emit(MediaEvent::Disconnected {
            stage_id: peer.stage.to_string(),
            participant_id: peer.participant_id,
            connection: peer.connection,
        });
    }
}

/// RTP (not RTCP, STUN or DTLS): version 2 and a payload type outside RTCP's 192..=223.
pub(super) fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (d[0] & 0xC0) == 0x80 && !(192..=223).contains(&d[1])
}

/// Drains one session's output to its next timeout: sends its datagrams, turns its events into
/// state changes and [`Work`].
pub(super) fn drain(
    peer: &mut Peer,
    socket: &UdpSocket,
    work: &mut VecDeque<Work>,
    send_drops: &mut u64,
) {
    loop {
        if !peer.rtc.is_alive() {
            if !peer.ended {
                peer.ended = true;
                work.push_back(Work::Ended(peer.id));
            }
            peer.next_timeout = Instant::now() + Duration::from_secs(3600);
            return;
        }
        let out = match peer.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                debug!(participant = %peer.participant_id, "poll failed: {e}");
                peer.rtc.disconnect();
                continue;
            }
        };
        match out {
            Output::Timeout(t) => {
                peer.next_timeout = t;
                return;
            }
            Output::Transmit(t) => {
                match socket.try_send_to(&t.contents, t.destination) {
                    Ok(_) => {
                        if peer.role == Role::Subscriber && is_rtp(&t.contents) {
                            peer.traffic.packets_forwarded += 1;
                            peer.traffic.bytes_forwarded += t.contents.len() as u64;
                        }
                    }
                    // UDP: a full socket buffer loses the datagram; NACK/PLI recover.
                    Err(_) => *send_drops += 1,
                }
            }
            Output::Event(e) => on_event(peer, e, work),
        }
    }
}

fn on_event(peer: &mut Peer, e: Event, work: &mut VecDeque<Work>) {
    match e {
        Event::Connected => {
            peer.connected = true;
            work.push_back(Work::Connected(peer.id));
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            // ICE-lite: no consent check from the browser for 15 s, or it went away.
            debug!(participant = %peer.participant_id, "ICE disconnected");
            peer.rtc.disconnect();
        }
        Event::MediaAdded(m) => match m.kind {
            MediaKind::Audio if peer.audio_mid.is_none() => peer.audio_mid = Some(m.mid),
            MediaKind::Video if peer.video_mid.is_none() => peer.video_mid = Some(m.mid),
            _ => {}
        },
        Event::MediaData(d) => {
            if peer.role != Role::Publisher {
                return;
            }
            if !d.contiguous && Some(d.mid) == peer.video_mid {
                // Lost packets the NACKs could not recover: the picture is broken for every
                // subscriber until the next keyframe.
                work.push_back(Work::WantKeyframe(peer.id));
            }
            work.push_back(Work::Media(peer.id, d));
        }
        Event::KeyframeRequest(_) if peer.role == Role::Subscriber => {
            work.push_back(Work::WantKeyframe(peer.id));
        }
        _ => {}
    }
}
