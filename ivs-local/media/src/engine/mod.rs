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

use str0m::media::MediaData;
use str0m::net::{Protocol, Receive};
use str0m::{Input, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{MediaError, MediaEvent, MediaStats, Role, Session};

use forward::request_keyframe;
use session::{drain, is_rtp, Peer};
use stages::{Feed, Stage};
use stats::Traffic;

mod forward;
mod session;
mod stages;
mod stats;

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
    Replication(crate::Replication),
}

type PeerId = u64;

/// How often the shared stats snapshot is refreshed while traffic flows.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// How many datagrams to read before giving timeouts and queued work a turn.
const READ_BATCH: usize = 256;
/// The longest the loop sleeps when no session has anything scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(1);

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
            Command::Replication(crate::Replication::Start {
                participant_id,
                source_stage,
                dest_stage,
            }) => self.replicate(participant_id, &source_stage, &dest_stage, socket, now),
            Command::Replication(crate::Replication::Stop {
                participant_id,
                dest_stage,
            }) => self.stop_replication(&participant_id, &dest_stage, socket, now),
        }
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
}
