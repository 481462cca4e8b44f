//! ivs-local's WebRTC media plane: what an IVS Real-Time stage does with media, on one laptop.
//!
//! Publishers send audio and video to a stage (WHIP); subscribers receive the stage's first
//! publisher — the host (a WHEP-style POST of a receive-only offer). Signalling, tokens and quotas
//! belong to ivs-local's HTTP layer, which calls [`MediaPlane::accept`] with an SDP offer and
//! returns the answer.
//!
//! Built on [str0m](https://docs.rs/str0m) (sans-I/O): one UDP socket, one thread that owns every
//! session, ICE-lite with a single host candidate. Frames are depacketised once per publisher and
//! shared (`Arc<[u8]>`) by all of a stage's subscribers. H.264 (preferred, as IVS ingests it),
//! VP8 and Opus are negotiated. Keyframe requests from subscribers go back to the publisher,
//! throttled to one per 500 ms per publisher; a subscriber that connects triggers one.
//!
//! Participant replication ([`MediaPlane::replicate`]) shows a publisher of one stage in other
//! stages too: their subscribers get the same frames, so the publisher uploads once.

mod engine;
mod keyframe;
mod offer;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

pub use keyframe::KEYFRAME_INTERVAL;

/// Where the media plane listens.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The UDP socket all sessions share. Port 0 picks a free port (see [`MediaPlane::local_addr`]).
    pub udp_bind: SocketAddr,
    /// The address browsers are told to send to (the ICE host candidate), with the bound port.
    pub public_ip: IpAddr,
}

/// What a participant does on a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Publisher,
    Subscriber,
}

/// One participant's media connection to a stage, as the HTTP layer authorised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The stage id (the last part of the stage ARN).
    pub stage_id: String,
    /// The participant id (the token's `jti`); unique among live sessions: a new session of a
    /// participant ends its older one (IVS: one connection per participant, the newest wins).
    pub participant_id: String,
    pub role: Role,
    /// The caller's id of this connection, unique per accepted session, reported back in
    /// every [`MediaEvent`] so that the events of a replaced session are not taken for its
    /// successor's.
    pub connection: u64,
}

/// What happens to sessions, for ivs-local's participant registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up: the participant has joined.
    Connected {
        stage_id: String,
        participant_id: String,
        connection: u64,
    },
    /// The first media packet from a publisher arrived.
    Published {
        stage_id: String,
        participant_id: String,
        connection: u64,
    },
    /// The session ended: DELETE, [`MediaPlane::disconnect`], [`MediaPlane::close_stage`], the
    /// peer closing, ICE timing out (no consent check for 15 s), or a newer session of the same
    /// participant. Sent once per accepted session, also for one that never connected.
    Disconnected {
        stage_id: String,
        participant_id: String,
        connection: u64,
    },
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot bind the media socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid SDP offer: {0}")]
    InvalidOffer(String),
    #[error("the media plane has stopped")]
    Stopped,
    #[error("media plane internal error: {0}")]
    Internal(String),
}

/// Counters of one stage. Packets are RTP datagrams: `received` from the stage's publishers,
/// `forwarded` to its subscribers. They are cumulative while the stage has sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageStats {
    pub stage_id: String,
    /// Publishing sessions of the stage itself.
    pub publishers: usize,
    /// Publishers of other stages replicated into this one.
    pub replicas: usize,
    pub subscribers: usize,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
}

/// A snapshot of the media plane: sessions now, and traffic since start. Refreshed by the media
/// thread on every session change and at least every 250 ms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStats {
    pub sessions: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Datagrams the socket refused to send (its buffer was full).
    pub send_drops: u64,
    /// Stages with at least one session, sorted by id.
    pub stages: Vec<StageStats>,
}

/// A change to participant replication in the media plane (stage ids, not ARNs): what the
/// registry decides and the media thread carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// The publisher `participant_id` of `source_stage` becomes a publisher of `dest_stage`
    /// too: its media reaches `dest_stage`'s subscribers.
    Start {
        /// The replicated publisher.
        participant_id: String,
        /// Its stage id.
        source_stage: String,
        /// The destination stage id.
        dest_stage: String,
    },
    /// Ends a replication started by [`Replication::Start`].
    Stop {
        /// The replicated publisher.
        participant_id: String,
        /// The destination stage id.
        dest_stage: String,
    },
}

/// Handle to the media plane; cheap to clone. The media thread stops when the last handle is
/// dropped (every session is closed first).
#[derive(Clone)]
pub struct MediaPlane {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<engine::Command>,
    stats: Arc<Mutex<MediaStats>>,
    local_addr: SocketAddr,
    candidate: Candidate,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
}

/// How many events may wait for the consumer before new ones are dropped (with a warning).
const EVENT_QUEUE: usize = 4096;

impl MediaPlane {
    /// Binds the UDP socket and starts the media thread.
    pub async fn start(
        cfg: MediaConfig,
    ) -> Result<(MediaPlane, mpsc::Receiver<MediaEvent>), MediaError> {
        let socket =
            std::net::UdpSocket::bind(cfg.udp_bind).map_err(|source| MediaError::Bind {
                addr: cfg.udp_bind,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| MediaError::Bind {
            addr: cfg.udp_bind,
            source,
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        // One certificate for every session, as a server would: generating an ECDSA key per
        // session would cost a millisecond or more on each join for nothing.
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| MediaError::Internal("cannot generate a DTLS certificate".into()))?;

        let candidate_addr = SocketAddr::new(cfg.public_ip, local_addr.port());
        let candidate = Candidate::host(candidate_addr, "udp").map_err(|e| {
            MediaError::Internal(format!(
                "{candidate_addr} is not a usable host candidate: {e}"
            ))
        })?;

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let engine = engine::Engine::new(local_addr, events, stats.clone());
        std::thread::Builder::new()
            .name("ivs-local-media".into())
            .spawn(move || engine::run_thread(engine, socket, command_rx))
            .map_err(|e| MediaError::Internal(e.to_string()))?;

        let plane = MediaPlane {
            inner: Arc::new(Inner {
                commands,
                stats,
                local_addr,
                candidate,
                crypto,
                cert,
            }),
        };
        Ok((plane, event_rx))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Checks an offer as [`MediaPlane::accept`] will, without touching any session: a caller
    /// that must not end anything for a bad offer (a newer session replaces an older one) asks
    /// first.
    pub fn check_offer(offer_sdp: &str, role: Role) -> Result<(), MediaError> {
        offer::check_offer(offer_sdp, role)?;
        SdpOffer::from_sdp_string(offer_sdp)
            .map(|_| ())
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))
    }

    /// Accepts an SDP offer for `session` and returns the SDP answer. The session is registered
    /// with the media thread before this returns, so the browser's first STUN packet finds it.
    /// A live session of the same participant is ended first (its `Disconnected` comes before
    /// any event of the new one).
    pub async fn accept(&self, session: Session, offer_sdp: String) -> Result<String, MediaError> {
        offer::check_offer(&offer_sdp, session.role)?;
        let offer = SdpOffer::from_sdp_string(&offer_sdp)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        let mut rtc = self.new_rtc();
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
        let (reply, replied) = oneshot::channel();
        self.inner
            .commands
            .send(engine::Command::Add {
                session,
                rtc: Box::new(rtc),
                reply,
            })
            .map_err(|_| MediaError::Stopped)?;
        replied.await.map_err(|_| MediaError::Stopped)??;
        Ok(answer.to_sdp_string())
    }

    /// Ends a participant's session (DELETE of its WHIP resource, DisconnectParticipant),
    /// only if it is still `connection` when given (a newer session of the participant is left
    /// alone). Unknown ids are ignored. A [`MediaEvent::Disconnected`] follows.
    pub fn disconnect(&self, participant_id: &str, connection: Option<u64>) {
        let _ = self.inner.commands.send(engine::Command::Disconnect {
            participant_id: participant_id.to_owned(),
            connection,
        });
    }

    /// Ends every session of a stage (DeleteStage), and the replications into or out of it.
    pub fn close_stage(&self, stage_id: &str) {
        let _ = self
            .inner
            .commands
            .send(engine::Command::CloseStage(stage_id.to_owned()));
    }

    /// Participant replication: the publisher `participant_id` of `source_stage` becomes a
    /// publisher of `dest_stage` as well. The destination's subscribers receive its audio and
    /// video when it is the destination's first publisher with media (as with a local one), and
    /// their keyframe requests reach it (throttled per publisher, across all the stages that
    /// show it). The replica outlives a disconnect of its source: a source that connects again
    /// to `source_stage` with the same participant id feeds it again, until
    /// [`MediaPlane::stop_replication`] (the registry decides when a reconnect window ends).
    /// May be called before the source connects. Repeating it is a no-op.
    pub fn replicate(&self, source_stage: &str, participant_id: &str, dest_stage: &str) {
        self.apply(Replication::Start {
            participant_id: participant_id.to_owned(),
            source_stage: source_stage.to_owned(),
            dest_stage: dest_stage.to_owned(),
        });
    }

    /// Ends the replica of `participant_id` in `dest_stage`. Unknown ones are ignored.
    pub fn stop_replication(&self, participant_id: &str, dest_stage: &str) {
        self.apply(Replication::Stop {
            participant_id: participant_id.to_owned(),
            dest_stage: dest_stage.to_owned(),
        });
    }

    /// Applies a replication change ([`MediaPlane::replicate`], [`MediaPlane::stop_replication`]).
    pub fn apply(&self, change: Replication) {
        let _ = self
            .inner
            .commands
            .send(engine::Command::Replication(change));
    }

    /// The latest snapshot of sessions and traffic.
    pub fn stats(&self) -> MediaStats {
        match self.inner.stats.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn new_rtc(&self) -> Rtc {
        // The codec order is the preference in our answer, and a browser sends the first codec
        // it accepts: IVS ingests H.264, so a publisher that offers it publishes H.264. A
        // subscriber's answer keeps every codec both sides know, so it can take either.
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.inner.crypto.clone())
            .set_dtls_cert(self.inner.cert.clone())
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(self.inner.candidate.clone());
        // Keep str0m's rule: drain after every mutation. Nothing can be sent yet (no remote
        // candidate), so this only reaches the next timeout.
        while let Ok(out) = rtc.poll_output() {
            if let Output::Timeout(_) = out {
                break;
            }
        }
        rtc
    }
}
