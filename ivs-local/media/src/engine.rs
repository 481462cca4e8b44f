//! The media thread: one UDP socket, every session, the fan-out.
//!
//! str0m is sans-I/O: each [`Rtc`] is a state machine that is fed datagrams and timeouts and
//! drained of transmits, events and its next deadline. This loop owns them all. Its one rule
//! (str0m's): after every mutation of an `Rtc` (input, media write, keyframe request, close),
//! drain its output to the next timeout before mutating it again — [`drain`] does that.
//!
//! Work that crosses sessions (a publisher's frame to its subscribers, a subscriber's keyframe
//! request to its publisher) is queued as [`Work`] while one session is drained and done after,
//! so no two sessions are borrowed at once.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Pt, Rid, Writer};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::keyframe::KeyframeThrottle;
use crate::{MediaError, MediaEvent, MediaStats, Role, Session, StageStats};

/// Requests from [`crate::MediaPlane`] handles.
pub(crate) enum Command {
    Add {
        session: Session,
        rtc: Box<Rtc>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Ends a participant's session, if it is still `connection` when given.
    Disconnect {
        participant_id: String,
        connection: Option<u64>,
    },
    CloseStage(String),
    /// The publisher `participant_id` of `source_stage` becomes a publisher of `dest_stage` too.
    Replicate {
        participant_id: String,
        source_stage: String,
        dest_stage: String,
    },
    /// Ends a replication started by [`Command::Replicate`].
    StopReplication {
        participant_id: String,
        dest_stage: String,
    },
}

type PeerId = u64;

/// How often the shared stats snapshot is refreshed while traffic flows.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// How many datagrams to read before giving timeouts and queued work a turn.
const READ_BATCH: usize = 256;
/// The longest the loop sleeps when no session has anything scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Traffic counters of one session.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    packets_received: u64,
    bytes_received: u64,
    packets_forwarded: u64,
    bytes_forwarded: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.packets_received += o.packets_received;
        self.bytes_received += o.bytes_received;
        self.packets_forwarded += o.packets_forwarded;
        self.bytes_forwarded += o.bytes_forwarded;
    }
}

struct Peer {
    id: PeerId,
    stage: Arc<str>,
    participant_id: String,
    role: Role,
    /// The caller's connection id (see [`Session::connection`]).
    connection: u64,
    rtc: Rtc,
    next_timeout: Instant,
    connected: bool,
    published: bool,
    /// Set once the session is known dead and queued for removal.
    ended: bool,
    /// The first audio and video m-lines (a publisher's incoming, a subscriber's outgoing).
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// With simulcast, the one layer forwarded (the first seen).
    video_rid: Option<Rid>,
    /// Subscriber: the publisher's payload type → ours, learned on the first frame of each.
    pt_map: Vec<(Pt, Pt)>,
    /// Publisher: keyframe requests towards it, from every stage that shows it (its own and
    /// the destinations of its replications), coalesced to one per interval.
    keyframes: KeyframeThrottle,
    traffic: Traffic,
}

impl Peer {
    fn mid_for(&self, kind: MediaKind) -> Option<Mid> {
        match kind {
            MediaKind::Audio => self.audio_mid,
            MediaKind::Video => self.video_mid,
        }
    }

    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        if Some(mid) == self.audio_mid {
            Some(MediaKind::Audio)
        } else if Some(mid) == self.video_mid {
            Some(MediaKind::Video)
        } else {
            None
        }
    }
}

/// A publisher of a stage: a session of the stage itself, or a replica of a publisher of
/// another stage (IVS participant replication).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Feed {
    Local(PeerId),
    Replica {
        participant_id: String,
        source_stage: Arc<str>,
    },
}

#[derive(Default)]
struct Stage {
    /// In join (or replication start) order: the first one with media is the host, whom
    /// subscribers receive.
    feeds: Vec<Feed>,
    subscribers: Vec<PeerId>,
    /// The session whose frames the subscribers get: a local publisher, or the source session
    /// of a replica (while it is connected to its own stage).
    source: Option<PeerId>,
    /// Counters of sessions that have left.
    retired: Traffic,
}

impl Stage {
    fn local_publishers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.feeds.iter().filter_map(|f| match f {
            Feed::Local(id) => Some(*id),
            Feed::Replica { .. } => None,
        })
    }

    fn replicas(&self) -> usize {
        self.feeds
            .iter()
            .filter(|f| matches!(f, Feed::Replica { .. }))
            .count()
    }

    fn is_empty(&self) -> bool {
        self.feeds.is_empty() && self.subscribers.is_empty()
    }
}

/// Work that crosses sessions, done after the session that caused it is drained.
// The queue is reused, so a big `Media` variant costs no allocation; boxing it would, per frame.
#[allow(clippy::large_enum_variant)]
enum Work {
    Connected(PeerId),
    /// A frame from a publisher, for its stage's subscribers.
    Media(PeerId, MediaData),
    /// A subscriber (or a publisher with a gap in its video) needs a keyframe from the source.
    WantKeyframe(PeerId),
    Ended(PeerId),
}

pub(crate) struct Engine {
    local_addr: SocketAddr,
    peers: HashMap<PeerId, Peer>,
    by_participant: HashMap<String, PeerId>,
    /// Remote address → session, learned from `Rtc::accepts` on the first datagram.
    by_addr: HashMap<SocketAddr, PeerId>,
    stages: HashMap<Arc<str>, Stage>,
    /// Replicated participant id → the stages it is replicated into.
    replicated: HashMap<String, Vec<Arc<str>>>,
    work: VecDeque<Work>,
    events: mpsc::Sender<MediaEvent>,
    shared_stats: Arc<Mutex<MediaStats>>,
    retired: Traffic,
    send_drops: u64,
    next_id: PeerId,
    stats_dirty: bool,
    stats_at: Instant,
}

/// The media thread's body: a current-thread runtime so the loop can wait on the socket, the
/// command channel and the next deadline at once.
pub(crate) fn run_thread(
    engine: Engine,
    socket: std::net::UdpSocket,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn!("media thread cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        match UdpSocket::from_std(socket) {
            Ok(socket) => engine.run(socket, commands).await,
            Err(e) => warn!("media socket cannot be registered: {e}"),
        }
    });
}

enum Wake {
    Command(Option<Command>),
    Readable,
    Timer,
}

impl Engine {
    pub(crate) fn new(
        local_addr: SocketAddr,
        events: mpsc::Sender<MediaEvent>,
        shared_stats: Arc<Mutex<MediaStats>>,
    ) -> Engine {
        Engine {
            local_addr,
            peers: HashMap::new(),
            by_participant: HashMap::new(),
            by_addr: HashMap::new(),
            stages: HashMap::new(),
            replicated: HashMap::new(),
            work: VecDeque::new(),
            events,
            shared_stats,
            retired: Traffic::default(),
            send_drops: 0,
            next_id: 1,
            stats_dirty: true,
            stats_at: Instant::now(),
        }
    }

    async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        info!(addr = %self.local_addr, "media plane listening");
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.next_deadline();
            let wake = tokio::select! {
                biased;
                c = commands.recv() => Wake::Command(c),
                r = socket.readable() => match r {
                    Ok(()) => Wake::Readable,
                    Err(e) => {
                        warn!("media socket failed: {e}");
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            let now = Instant::now();
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(c)) => self.command(c, &socket, now),
                Wake::Readable => self.read_batch(&socket, &mut buf),
                Wake::Timer => {}
            }
            let now = Instant::now();
            self.timeouts(&socket, now);
            self.do_work(&socket, now);
            self.publish_stats(now);
        }
        // Every handle is gone (or the socket broke): say goodbye to every peer.
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.end(id, &socket);
        }
        self.do_work(&socket, Instant::now());
        self.publish_stats(Instant::now());
        info!("media plane stopped");
    }

    fn next_deadline(&self) -> Instant {
        let mut t = Instant::now() + IDLE_WAKE;
        for p in self.peers.values() {
            if p.next_timeout < t {
                t = p.next_timeout;
            }
            if let Some(k) = p.keyframes.deadline() {
                t = t.min(k);
            }
        }
        if self.stats_dirty {
            t = t.min(self.stats_at + STATS_EVERY);
        }
        t
    }

    fn command(&mut self, c: Command, socket: &UdpSocket, now: Instant) {
        match c {
            Command::Add {
                session,
                rtc,
                reply,
            } => {
                let r = self.add(session, *rtc, socket, now);
                // The caller may read stats() as soon as accept() returns.
                self.publish_stats(now);
                let _ = reply.send(r);
            }
            Command::Disconnect {
                participant_id,
                connection,
            } => {
                if let Some(&id) = self.by_participant.get(&participant_id) {
                    let matches = self
                        .peers
                        .get(&id)
                        .is_some_and(|p| connection.is_none_or(|c| c == p.connection));
                    if matches {
                        self.end(id, socket);
                    }
                }
            }
            Command::CloseStage(stage) => {
                // Replications into or out of a deleted stage end with it.
                let mut ended = Vec::new();
                for (pid, dests) in &self.replicated {
                    for d in dests {
                        let from_here = self.stages.get(d).is_some_and(|s| {
                            s.feeds.iter().any(|f| {
                                matches!(f, Feed::Replica { participant_id, source_stage }
                                    if participant_id == pid && **source_stage == *stage)
                            })
                        });
                        if **d == *stage || from_here {
                            ended.push((pid.clone(), d.to_string()));
                        }
                    }
                }
                for (pid, dest) in ended {
                    self.stop_replication(&pid, &dest, socket, now);
                }
                let ids: Vec<PeerId> = match self.stages.get(stage.as_str()) {
                    Some(s) => s
                        .local_publishers()
                        .chain(s.subscribers.iter().copied())
                        .collect(),
                    None => return,
                };
                for id in ids {
                    self.end(id, socket);
                }
            }
            Command::Replicate {
                participant_id,
                source_stage,
                dest_stage,
            } => self.replicate(participant_id, &source_stage, &dest_stage, socket, now),
            Command::StopReplication {
                participant_id,
                dest_stage,
            } => self.stop_replication(&participant_id, &dest_stage, socket, now),
        }
    }

    fn stage_key(&self, stage: &str) -> Arc<str> {
        match self.stages.get_key_value(stage) {
            Some((k, _)) => k.clone(),
            None => Arc::from(stage),
        }
    }

    /// `participant_id` (a publisher of `source_stage`, now or later) is shown in `dest_stage`
    /// too. Its frames reach the destination's subscribers whenever it is connected to its
    /// own stage (a source that reconnects with the same id resumes the replica).
    fn replicate(
        &mut self,
        participant_id: String,
        source_stage: &str,
        dest_stage: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        if source_stage == dest_stage {
            return;
        }
        let source_key = self.stage_key(source_stage);
        let dest_key = self.stage_key(dest_stage);
        let feed = Feed::Replica {
            participant_id: participant_id.clone(),
            source_stage: source_key,
        };
        let stage = self.stages.entry(dest_key.clone()).or_default();
        if !stage.feeds.contains(&feed) {
            stage.feeds.push(feed);
        }
        let dests = self.replicated.entry(participant_id.clone()).or_default();
        if !dests.contains(&dest_key) {
            dests.push(dest_key.clone());
        }
        info!(participant = %participant_id, from = %source_stage, to = %dest_stage, "replication started");
        self.stats_dirty = true;
        self.refresh_source(&dest_key, socket, now);
    }

    fn stop_replication(
        &mut self,
        participant_id: &str,
        dest_stage: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        if let Some(dests) = self.replicated.get_mut(participant_id) {
            dests.retain(|d| **d != *dest_stage);
            if dests.is_empty() {
                self.replicated.remove(participant_id);
            }
        }
        let Some(key) = self
            .stages
            .get_key_value(dest_stage)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let stage = self.stages.get_mut(&key).expect("just found");
        let before = stage.feeds.len();
        stage.feeds.retain(
            |f| !matches!(f, Feed::Replica { participant_id: p, .. } if p == participant_id),
        );
        if stage.feeds.len() == before {
            return;
        }
        info!(participant = %participant_id, to = %dest_stage, "replication stopped");
        self.stats_dirty = true;
        self.refresh_source(&key, socket, now);
        if self.stages.get(&key).is_some_and(Stage::is_empty) {
            self.stages.remove(&key);
        }
    }

    /// The session a feed's frames come from now, if it has one.
    fn feed_session(&self, feed: &Feed) -> Option<PeerId> {
        match feed {
            Feed::Local(id) => Some(*id),
            Feed::Replica {
                participant_id,
                source_stage,
            } => {
                let id = *self.by_participant.get(participant_id)?;
                let p = self.peers.get(&id)?;
                (p.role == Role::Publisher && p.stage == *source_stage && !p.ended).then_some(id)
            }
        }
    }

    /// Recomputes which session a stage's subscribers receive. On a change their payload type
    /// maps are reset (the new source may number its codecs differently) and, when they can
    /// decode nothing until its next keyframe, the new source is asked for one.
    fn refresh_source(&mut self, stage: &Arc<str>, socket: &UdpSocket, now: Instant) {
        let Some(st) = self.stages.get(stage) else {
            return;
        };
        let source = st.feeds.iter().find_map(|f| self.feed_session(f));
        if source == st.source {
            return;
        }
        let st = self.stages.get_mut(stage).expect("checked");
        st.source = source;
        let has_subscribers = !st.subscribers.is_empty();
        for sub in &st.subscribers {
            if let Some(s) = self.peers.get_mut(sub) {
                s.pt_map.clear();
            }
        }
        if let (Some(s), true) = (source, has_subscribers) {
            self.want_keyframe(s, socket, now);
        }
    }

    /// Refreshes the stage of a publisher and every stage it is replicated into.
    fn refresh_sources_of(
        &mut self,
        stage: &Arc<str>,
        participant_id: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        self.refresh_source(stage, socket, now);
        let dests = self
            .replicated
            .get(participant_id)
            .cloned()
            .unwrap_or_default();
        for d in dests {
            self.refresh_source(&d, socket, now);
        }
    }

    fn add(
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
    fn end(&mut self, id: PeerId, socket: &UdpSocket) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.rtc.is_alive() && peer.rtc.close().is_ok() {
            drain(peer, socket, &mut self.work, &mut self.send_drops);
        }
        peer.rtc.disconnect();
        drain(peer, socket, &mut self.work, &mut self.send_drops);
    }

    fn read_batch(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..READ_BATCH {
            match socket.try_recv_from(buf) {
                Ok((n, source)) => self.datagram(socket, &buf[..n], source, Instant::now()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP port unreachable from a closed browser port shows up as an error on
                // the next read on Linux; it concerns one peer, not the socket.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    warn!("media socket read failed: {e}");
                    return;
                }
            }
        }
    }

    fn datagram(&mut self, socket: &UdpSocket, data: &[u8], source: SocketAddr, now: Instant) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        );
        let cached = self
            .by_addr
            .get(&source)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        let id = match cached {
            Some(id) => id,
            None => {
                // A new remote address: find the session by its ICE credentials (STUN) or
                // its nominated pair.
                let Some(p) = self.peers.values().find(|p| p.rtc.accepts(&input)) else {
                    debug!(%source, "datagram for no session");
                    return;
                };
                self.by_addr.insert(source, p.id);
                p.id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.role == Role::Publisher && is_rtp(data) {
            peer.traffic.packets_received += 1;
            peer.traffic.bytes_received += data.len() as u64;
        }
        if let Err(e) = peer.rtc.handle_input(input) {
            debug!(participant = %peer.participant_id, "input rejected: {e}");
            peer.rtc.disconnect();
        }
        drain(peer, socket, &mut self.work, &mut self.send_drops);
        self.do_work(socket, now);
    }

    fn timeouts(&mut self, socket: &UdpSocket, now: Instant) {
        for peer in self.peers.values_mut() {
            if peer.next_timeout <= now && !peer.ended {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    debug!(participant = %peer.participant_id, "timeout failed: {e}");
                    peer.rtc.disconnect();
                }
                drain(peer, socket, &mut self.work, &mut self.send_drops);
            }
        }
        for peer in self.peers.values_mut() {
            if peer.keyframes.poll(now) {
                request_keyframe(peer, socket, &mut self.work, &mut self.send_drops);
            }
        }
    }

    fn do_work(&mut self, socket: &UdpSocket, now: Instant) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::Media(from, data) => self.forward(from, data, socket),
                Work::Connected(id) => self.connected(id, socket, now),
                Work::WantKeyframe(id) => self.want_keyframe(id, socket, now),
                Work::Ended(id) => self.remove(id, socket, now),
            }
        }
    }

    fn connected(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
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

    /// A frame from publisher `from`: write it to every connected subscriber of its stage, if
    /// `from` is the stage's source.
    fn forward(&mut self, from: PeerId, data: MediaData, socket: &UdpSocket) {
        let Some(publisher) = self.peers.get_mut(&from) else {
            return;
        };
        if !publisher.published {
            publisher.published = true;
            info!(stage = %publisher.stage, participant = %publisher.participant_id, "published");
            let ev = MediaEvent::Published {
                stage_id: publisher.stage.to_string(),
                participant_id: publisher.participant_id.clone(),
                connection: publisher.connection,
            };
            self.emit(ev);
        }
        let Some(publisher) = self.peers.get_mut(&from) else {
            return;
        };
        let Some(kind) = publisher.kind_of(data.mid) else {
            return;
        };
        if kind == MediaKind::Video && data.rid.is_some() {
            // Simulcast: forward one layer only.
            if publisher.video_rid.is_none() {
                publisher.video_rid = data.rid;
            }
            if publisher.video_rid != data.rid {
                return;
            }
        }
        let own_stage = publisher.stage.clone();
        let replicated = self.replicated.get(publisher.participant_id.as_str());
        let own = std::iter::once(&own_stage);
        let stages = &self.stages;
        let targets = own
            .chain(replicated.into_iter().flatten())
            .filter_map(|key| stages.get(key))
            .filter(|st| st.source == Some(from));
        for stage in targets {
            write_to_subscribers(
                stage,
                kind,
                &data,
                &mut self.peers,
                socket,
                &mut self.work,
                &mut self.send_drops,
            );
        }
    }

    /// Peer `id` (a subscriber, or a publisher with a gap in its video) needs a keyframe from
    /// the session its stage shows: throttled per publisher, across every stage showing it.
    fn want_keyframe(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let source = match peer.role {
            Role::Subscriber => self.stages.get(&peer.stage).and_then(|s| s.source),
            // A gap in a publisher nobody watches (anywhere): nothing to repair.
            Role::Publisher => self
                .stages
                .values()
                .any(|s| s.source == Some(id))
                .then_some(id),
        };
        let Some(source) = source.and_then(|s| self.peers.get_mut(&s)) else {
            return;
        };
        if !source.connected || source.ended {
            return;
        }
        if source.keyframes.request(now) {
            request_keyframe(source, socket, &mut self.work, &mut self.send_drops);
        }
    }

    /// Removes a dead session from every index and reports it.
    fn remove(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
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

    fn emit(&self, ev: MediaEvent) {
        match self.events.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => {
                warn!(?ev, "media event queue full: event dropped")
            }
            // Nobody listens: fine (tests, examples).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn publish_stats(&mut self, now: Instant) {
        if !self.stats_dirty && now < self.stats_at + STATS_EVERY {
            return;
        }
        if !self.stats_dirty && self.peers.is_empty() {
            return;
        }
        self.stats_dirty = false;
        self.stats_at = now;
        let mut s = MediaStats {
            sessions: self.peers.len(),
            send_drops: self.send_drops,
            ..MediaStats::default()
        };
        let mut total = self.retired;
        let mut stages: Vec<StageStats> = Vec::with_capacity(self.stages.len());
        for (id, stage) in &self.stages {
            let mut t = stage.retired;
            for p in stage
                .local_publishers()
                .chain(stage.subscribers.iter().copied())
            {
                if let Some(p) = self.peers.get(&p) {
                    t.add(&p.traffic);
                }
            }
            stages.push(StageStats {
                stage_id: id.to_string(),
                publishers: stage.local_publishers().count(),
                replicas: stage.replicas(),
                subscribers: stage.subscribers.len(),
                packets_received: t.packets_received,
                bytes_received: t.bytes_received,
                packets_forwarded: t.packets_forwarded,
                bytes_forwarded: t.bytes_forwarded,
            });
        }
        for p in self.peers.values() {
            total.add(&p.traffic);
            match p.role {
                Role::Publisher => s.publishers += 1,
                Role::Subscriber => s.subscribers += 1,
            }
        }
        stages.sort_by(|a, b| a.stage_id.cmp(&b.stage_id));
        s.packets_received = total.packets_received;
        s.bytes_received = total.bytes_received;
        s.packets_forwarded = total.packets_forwarded;
        s.bytes_forwarded = total.bytes_forwarded;
        s.stages = stages;
        match self.shared_stats.lock() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }
}

/// Writes a publisher's frame to every connected subscriber of `stage`.
fn write_to_subscribers(
    stage: &Stage,
    kind: MediaKind,
    data: &MediaData,
    peers: &mut HashMap<PeerId, Peer>,
    socket: &UdpSocket,
    work: &mut VecDeque<Work>,
    send_drops: &mut u64,
) {
    for sub_id in &stage.subscribers {
        let Some(sub) = peers.get_mut(sub_id) else {
            continue;
        };
        if !sub.connected || sub.ended {
            continue;
        }
        let Some(mid) = sub.mid_for(kind) else {
            continue;
        };
        let cached = sub
            .pt_map
            .iter()
            .find(|(src, _)| *src == data.pt)
            .map(|(_, out)| *out);
        let pt = match cached {
            Some(pt) => pt,
            None => {
                let Some(writer) = sub.rtc.writer(mid) else {
                    continue;
                };
                let Some(pt) = choose_pt(&writer, data.params) else {
                    debug!(participant = %sub.participant_id, codec = ?data.params.spec().codec,
                        "subscriber did not negotiate the publisher's codec");
                    continue;
                };
                sub.pt_map.push((data.pt, pt));
                pt
            }
        };
        let Some(writer) = sub.rtc.writer(mid) else {
            continue;
        };
        if let Err(e) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
            debug!(participant = %sub.participant_id, "write failed: {e}");
            sub.rtc.disconnect();
        }
        drain(sub, socket, work, send_drops);
    }
}

/// The subscriber's payload type for a publisher's frame: the best match among the payload
/// types the subscriber negotiated, else any of the same codec (decoders take either H.264
/// profile in practice).
fn choose_pt(writer: &Writer<'_>, params: PayloadParams) -> Option<Pt> {
    if let Some(pt) = writer.match_params(params) {
        if writer.payload_params().any(|p| p.pt() == pt) {
            return Some(pt);
        }
    }
    let codec = params.spec().codec;
    writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

fn request_keyframe(
    source: &mut Peer,
    socket: &UdpSocket,
    work: &mut VecDeque<Work>,
    send_drops: &mut u64,
) {
    let Some(mid) = source.video_mid else {
        return;
    };
    if !source.connected || source.ended {
        return;
    }
    let rid = source.video_rid;
    if let Some(mut w) = source.rtc.writer(mid) {
        match w.request_keyframe(rid, KeyframeRequestKind::Pli) {
            Ok(()) => debug!(participant = %source.participant_id, "keyframe requested"),
            Err(e) => debug!(participant = %source.participant_id, "keyframe request failed: {e}"),
        }
    }
    drain(source, socket, work, send_drops);
}

/// RTP (not RTCP, STUN or DTLS): version 2 and a payload type outside RTCP's 192..=223.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (d[0] & 0xC0) == 0x80 && !(192..=223).contains(&d[1])
}

/// Drains one session's output to its next timeout: sends its datagrams, turns its events into
/// state changes and [`Work`].
fn drain(peer: &mut Peer, socket: &UdpSocket, work: &mut VecDeque<Work>, send_drops: &mut u64) {
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
