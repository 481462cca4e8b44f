//! Media forwarding: a publisher's frames to the subscribers of every stage that shows it, and
//! keyframe requests back to the source.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Pt, Writer};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use super::session::{drain, Peer};
use super::stages::Stage;
use super::{Engine, PeerId, Work};
use crate::{MediaEvent, Role};

impl Engine {
    /// A frame from publisher `from`: write it to every connected subscriber of its stage, if
    /// `from` is the stage's source.
    pub(super) fn forward(&mut self, from: PeerId, data: MediaData, socket: &UdpSocket) {
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
    pub(super) fn want_keyframe(&mut self, id: PeerId, socket: &UdpSocket, now: Instant) {
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

pub(super) fn request_keyframe(
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
