//! The media plane end to end without a browser: str0m peers (each on its own UDP socket, as
//! browsers are) publish and subscribe through `MediaPlane` over real loopback UDP, ICE, DTLS and
//! SRTP. Checks forwarding, events, keyframe requests (on join, and throttled), stats, and the
//! ways a session ends.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ivs_local_media::{MediaConfig, MediaError, MediaEvent, MediaPlane, Role, Session};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;

/// A WebRTC peer driven by hand: `pump` moves it forward for a while.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    video: Option<Mid>,
    audio: Option<Mid>,
    connected: bool,
    video_frames: usize,
    audio_frames: usize,
    keyframe_requests: usize,
    frames_sent: u64,
    /// Payload bytes per video frame this peer sends (tells publishers apart at the receiver).
    frame_size: u32,
    /// Sizes of the video frames received, in order.
    video_sizes: Vec<usize>,
}

impl Peer {
    /// A peer with one audio and one video m-line in `dir`; returns it and its SDP offer.
    fn new(dir: Direction) -> (Peer, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, Some("s".into()), None, None);
        let video = api.add_media(MediaKind::Video, dir, Some("s".into()), None, None);
        let (offer, pending) = api.apply().unwrap();
        let peer = Peer {
            rtc,
            socket,
            local,
            pending: Some(pending),
            video: Some(video),
            audio: Some(audio),
            connected: false,
            video_frames: 0,
            audio_frames: 0,
            keyframe_requests: 0,
            frames_sent: 0,
            frame_size: 3000,
            video_sizes: Vec::new(),
        };
        (peer, offer.to_sdp_string())
    }

    fn answer(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Drains output to the next timeout (str0m's rule after each mutation).
    fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaData(d) if Some(d.mid) == self.video => {
                        self.video_frames += 1;
                        self.video_sizes.push(d.data.len());
                    }
                    Event::MediaData(_) => self.audio_frames += 1,
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    _ => {}
                },
                Err(_) => return Instant::now() + Duration::from_secs(1),
            }
        }
    }

    /// Runs the peer for `d`: datagrams in, timeouts, output out.
    fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = vec![0u8; 2048];
        let mut next = self.drain();
        while Instant::now() < end && self.rtc.is_alive() {
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(
                            Instant::now(),
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: self.local,
                                contents,
                            },
                        );
                        let _ = self.rtc.handle_input(input);
                        next = self.drain();
                    }
                }
                Err(_) => {
                    if Instant::now() >= next {
                        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                        next = self.drain();
                    }
                }
            }
        }
    }

    /// Sends one ~3 kB H.264 frame (an IDR with SPS/PPS every 30th) and one Opus frame.
    fn send_frame(&mut self) {
        let n = self.frames_sent;
        self.frames_sent += 1;
        let mut h264 = Vec::with_capacity(3200);
        if n.is_multiple_of(30) {
            h264.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01]);
            h264.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
            h264.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        } else {
            h264.extend_from_slice(&[0, 0, 0, 1, 0x41]);
        }
        h264.extend((0..self.frame_size).map(|i| (i.wrapping_mul(31) as u8) | 1));
        let now = Instant::now();
        let video = self.video.unwrap();
        let w = self.rtc.writer(video).unwrap();
        let pt = w.payload_params().next().unwrap().pt();
        w.write(pt, now, MediaTime::from_90khz(n * 3000), h264)
            .unwrap();
        self.drain();
        let audio = self.audio.unwrap();
        let w = self.rtc.writer(audio).unwrap();
        let pt = w.payload_params().next().unwrap().pt();
        let opus = vec![0xf8u8, 0xff, 0xfe];
        w.write(
            pt,
            now,
            MediaTime::new(n * 1440, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            opus,
        )
        .unwrap();
        self.drain();
    }

    fn request_keyframe(&mut self) {
        let video = self.video.unwrap();
        if let Some(mut w) = self.rtc.writer(video) {
            w.request_keyframe(None, KeyframeRequestKind::Pli).unwrap();
        }
        self.drain();
    }
}

/// Pumps every peer in turn for `d`, the publisher writing a frame every ~33 ms.
fn run(peers: &mut [&mut Peer], publisher: Option<usize>, d: Duration) {
    run_publishers(peers, publisher.as_slice(), d)
}

/// Pumps every peer in turn for `d`, each of `publishers` writing a frame every ~33 ms.
fn run_publishers(peers: &mut [&mut Peer], publishers: &[usize], d: Duration) {
    let end = Instant::now() + d;
    let mut last_frame = Instant::now() - Duration::from_secs(1);
    while Instant::now() < end {
        if last_frame.elapsed() >= Duration::from_millis(33) {
            for &p in publishers {
                if peers[p].connected && peers[p].rtc.is_alive() {
                    peers[p].send_frame();
                }
            }
            last_frame = Instant::now();
        }
        for peer in peers.iter_mut() {
            peer.pump(Duration::from_millis(2));
        }
    }
}

fn session(stage: &str, participant: &str, role: Role) -> Session {
    session_n(stage, participant, role, 1)
}

fn session_n(stage: &str, participant: &str, role: Role, connection: u64) -> Session {
    Session {
        stage_id: stage.into(),
        participant_id: participant.into(),
        role,
        connection,
    }
}

async fn start() -> (MediaPlane, mpsc::Receiver<MediaEvent>) {
    MediaPlane::start(MediaConfig {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        public_ip: "127.0.0.1".parse().unwrap(),
    })
    .await
    .unwrap()
}

fn events(rx: &mut mpsc::Receiver<MediaEvent>) -> Vec<MediaEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

fn connected(stage: &str, p: &str, connection: u64) -> MediaEvent {
    MediaEvent::Connected {
        stage_id: stage.into(),
        participant_id: p.into(),
        connection,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_fans_out_to_subscribers_of_its_stage_only() {
    let (plane, mut rx) = start().await;

    let (mut publisher, offer) = Peer::new(Direction::SendOnly);
    let answer = plane
        .accept(session("stage-a", "host", Role::Publisher), offer)
        .await
        .unwrap();
    publisher.answer(&answer);
    // One participant id, one session: a second session of viewer-1 ends the first (IVS:
    // the newest connection wins), whose Disconnected comes first.
    let (_stale, offer) = Peer::new(Direction::RecvOnly);
    plane
        .accept(session("stage-a", "viewer-1", Role::Subscriber), offer)
        .await
        .unwrap();
    let (mut sub1, offer) = Peer::new(Direction::RecvOnly);
    sub1.answer(
        &plane
            .accept(session_n("stage-a", "viewer-1", Role::Subscriber, 2), offer)
            .await
            .unwrap(),
    );
    assert_eq!(
        events(&mut rx),
        vec![MediaEvent::Disconnected {
            stage_id: "stage-a".into(),
            participant_id: "viewer-1".into(),
            connection: 1
        }]
    );
    // Ending the replaced connection by its id leaves the new one alone.
    plane.disconnect("viewer-1", Some(1));
    let (mut other, offer) = Peer::new(Direction::RecvOnly);
    other.answer(
        &plane
            .accept(session("stage-b", "viewer-other", Role::Subscriber), offer)
            .await
            .unwrap(),
    );

    run(
        &mut [&mut publisher, &mut sub1, &mut other],
        Some(0),
        Duration::from_secs(3),
    );
    assert!(publisher.connected && sub1.connected && other.connected);
    assert!(
        sub1.video_frames >= 40,
        "subscriber got {} video frames of {} sent",
        sub1.video_frames,
        publisher.frames_sent
    );
    assert!(
        sub1.audio_frames >= 40,
        "audio frames {}",
        sub1.audio_frames
    );
    assert_eq!(other.video_frames + other.audio_frames, 0, "stages leak");
    // The subscriber's join asked the publisher for a keyframe.
    assert!(publisher.keyframe_requests >= 1);

    let ev = events(&mut rx);
    for p in [
        ("stage-a", "host", 1),
        ("stage-a", "viewer-1", 2),
        ("stage-b", "viewer-other", 1),
    ] {
        assert!(ev.contains(&connected(p.0, p.1, p.2)), "{ev:?}");
    }
    assert!(
        !ev.iter()
            .any(|e| matches!(e, MediaEvent::Disconnected { .. })),
        "{ev:?}"
    );
    let published: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, MediaEvent::Published { .. }))
        .collect();
    assert_eq!(
        published,
        vec![&MediaEvent::Published {
            stage_id: "stage-a".into(),
            participant_id: "host".into(),
            connection: 1
        }]
    );

    let stats = plane.stats();
    assert_eq!(
        (stats.sessions, stats.publishers, stats.subscribers),
        (3, 1, 2)
    );
    let a = stats
        .stages
        .iter()
        .find(|s| s.stage_id == "stage-a")
        .unwrap();
    assert_eq!((a.publishers, a.subscribers), (1, 1));
    assert!(
        a.packets_received > 100 && a.packets_forwarded > 100,
        "{a:?}"
    );
    let b = stats
        .stages
        .iter()
        .find(|s| s.stage_id == "stage-b")
        .unwrap();
    assert_eq!(b.packets_forwarded, 0);

    // A burst of keyframe requests from the subscriber reaches the publisher throttled.
    let before = publisher.keyframe_requests;
    for _ in 0..10 {
        sub1.request_keyframe();
        run(
            &mut [&mut publisher, &mut sub1],
            Some(0),
            Duration::from_millis(40),
        );
    }
    run(
        &mut [&mut publisher, &mut sub1],
        Some(0),
        Duration::from_millis(700),
    );
    let forwarded = publisher.keyframe_requests - before;
    assert!(
        (1..=3).contains(&forwarded),
        "10 requests in 0.4 s became {forwarded} at the publisher"
    );

    // disconnect() ends one session; close_stage() ends a stage's.
    plane.disconnect("viewer-1", None);
    run(
        &mut [&mut publisher, &mut sub1],
        Some(0),
        Duration::from_millis(300),
    );
    plane.close_stage("stage-b");
    run(
        &mut [&mut publisher, &mut other],
        Some(0),
        Duration::from_millis(300),
    );
    let ev = events(&mut rx);
    for (stage, p, connection) in [("stage-a", "viewer-1", 2), ("stage-b", "viewer-other", 1)] {
        assert!(
            ev.contains(&MediaEvent::Disconnected {
                stage_id: stage.into(),
                participant_id: p.into(),
                connection
            }),
            "{ev:?}"
        );
    }
    let stats = plane.stats();
    assert_eq!((stats.sessions, stats.subscribers), (1, 0));
    assert!(stats.stages.iter().all(|s| s.stage_id != "stage-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_goes_silent_times_out() {
    let (plane, mut rx) = start().await;
    let (mut sub, offer) = Peer::new(Direction::RecvOnly);
    sub.answer(
        &plane
            .accept(session("s", "quiet", Role::Subscriber), offer)
            .await
            .unwrap(),
    );
    run(&mut [&mut sub], None, Duration::from_secs(1));
    assert!(sub.connected);
    // The peer stops talking (no consent checks): ICE-lite gives up after 15 s.
    drop(sub);
    let t0 = Instant::now();
    let ev = loop {
        match tokio::time::timeout(Duration::from_secs(25), rx.recv()).await {
            Ok(Some(e @ MediaEvent::Disconnected { .. })) => break e,
            Ok(Some(_)) => continue,
            other => panic!("no Disconnected event: {other:?}"),
        }
    };
    assert_eq!(
        ev,
        MediaEvent::Disconnected {
            stage_id: "s".into(),
            participant_id: "quiet".into(),
            connection: 1
        }
    );
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(plane.stats().sessions, 0);
}

#[tokio::test]
async fn offers_that_cannot_work_are_refused() {
    let (plane, _rx) = start().await;
    let (_p, send_offer) = Peer::new(Direction::SendOnly);
    let r = plane
        .accept(session("s", "x", Role::Subscriber), send_offer)
        .await;
    assert!(matches!(r, Err(MediaError::InvalidOffer(_))), "{r:?}");
    let r = plane
        .accept(session("s", "y", Role::Publisher), "v=0\r\nnot sdp".into())
        .await;
    assert!(matches!(r, Err(MediaError::InvalidOffer(_))), "{r:?}");
    assert_eq!(plane.stats().sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_the_first_publisher_then_the_next_when_it_leaves() {
    let (plane, _rx) = start().await;
    let (mut host, offer) = Peer::new(Direction::SendOnly);
    host.answer(
        &plane
            .accept(session("s", "host", Role::Publisher), offer)
            .await
            .unwrap(),
    );
    let (mut guest, offer) = Peer::new(Direction::SendOnly);
    guest.frame_size = 1500;
    guest.answer(
        &plane
            .accept(session("s", "guest", Role::Publisher), offer)
            .await
            .unwrap(),
    );
    let (mut sub, offer) = Peer::new(Direction::RecvOnly);
    sub.answer(
        &plane
            .accept(session("s", "viewer", Role::Subscriber), offer)
            .await
            .unwrap(),
    );
    run_publishers(
        &mut [&mut host, &mut guest, &mut sub],
        &[0, 1],
        Duration::from_secs(2),
    );
    assert!(sub.video_frames >= 20, "got {}", sub.video_frames);
    // Frames carry a 5-15 byte Annex B prefix: the host's are > 3000 bytes, the guest's < 1600.
    assert!(
        sub.video_sizes.iter().all(|&n| n > 3000),
        "only the first publisher (the host) is forwarded: {:?}",
        &sub.video_sizes[..sub.video_sizes.len().min(20)]
    );

    // The host leaves: the guest becomes what the subscriber sees.
    plane.disconnect("host", None);
    let seen = sub.video_sizes.len();
    run_publishers(
        &mut [&mut host, &mut guest, &mut sub],
        &[1],
        Duration::from_secs(2),
    );
    let after = &sub.video_sizes[seen..];
    assert!(
        after.iter().filter(|&&n| n < 1600).count() >= 20,
        "the next publisher takes over: {after:?}"
    );
    // And the new source was asked for a keyframe for the subscriber.
    assert!(guest.keyframe_requests >= 1);
}

async fn join(plane: &MediaPlane, stage: &str, participant: &str, role: Role) -> Peer {
    let dir = match role {
        Role::Publisher => Direction::SendOnly,
        Role::Subscriber => Direction::RecvOnly,
    };
    let (mut peer, offer) = Peer::new(dir);
    peer.answer(
        &plane
            .accept(session(stage, participant, role), offer)
            .await
            .unwrap(),
    );
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_publisher_reaches_the_subscribers_of_the_destination_stage() {
    let (plane, _rx) = start().await;
    let mut host = join(&plane, "origin", "host", Role::Publisher).await;
    let mut at_origin = join(&plane, "origin", "v-origin", Role::Subscriber).await;
    let mut at_replica = join(&plane, "replica", "v-replica", Role::Subscriber).await;
    let mut elsewhere = join(&plane, "other", "v-other", Role::Subscriber).await;

    // Before replication the replica stage has no host: nothing reaches its subscriber.
    run(
        &mut [&mut host, &mut at_origin, &mut at_replica, &mut elsewhere],
        Some(0),
        Duration::from_secs(1),
    );
    assert!(
        at_origin.video_frames >= 10,
        "origin got {}",
        at_origin.video_frames
    );
    assert_eq!(at_replica.video_frames, 0);

    plane.replicate("origin", "host", "replica");
    let requests_before = host.keyframe_requests;
    run(
        &mut [&mut host, &mut at_origin, &mut at_replica, &mut elsewhere],
        Some(0),
        Duration::from_secs(2),
    );
    assert!(
        at_replica.video_frames >= 20,
        "replica got {} video frames",
        at_replica.video_frames
    );
    assert!(
        at_replica.audio_frames >= 20,
        "replica got {} audio frames",
        at_replica.audio_frames
    );
    assert!(at_replica.video_sizes.iter().all(|&n| n > 3000));
    assert_eq!(
        elsewhere.video_frames, 0,
        "a stage without the replica gets nothing"
    );
    // The replica's subscriber, already connected, needed a keyframe: the source was asked.
    assert!(host.keyframe_requests > requests_before);

    let stats = plane.stats();
    let replica_stage = stats
        .stages
        .iter()
        .find(|s| s.stage_id == "replica")
        .unwrap();
    assert_eq!((replica_stage.publishers, replica_stage.replicas), (0, 1));
    assert!(replica_stage.packets_forwarded > 0);
    // One upload: the publisher's packets are received once, in its own stage.
    assert_eq!(stats.publishers, 1);

    // Keyframe requests from both stages' subscribers reach the source, throttled per
    // publisher: a request every ~10 ms from each for 2 s gives at most ~5 upstream.
    let before = host.keyframe_requests;
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        at_origin.request_keyframe();
        at_replica.request_keyframe();
        run(
            &mut [&mut host, &mut at_origin, &mut at_replica],
            Some(0),
            Duration::from_millis(10),
        );
    }
    let upstream = host.keyframe_requests - before;
    assert!(
        (2..=6).contains(&upstream),
        "{upstream} keyframe requests reached the publisher in 2 s"
    );

    // Stopped: the replica stage's subscriber gets nothing more; the origin's still does.
    plane.stop_replication("host", "replica");
    run(
        &mut [&mut host, &mut at_origin, &mut at_replica],
        Some(0),
        Duration::from_millis(300),
    );
    let (replica_seen, origin_seen) = (at_replica.video_frames, at_origin.video_frames);
    run(
        &mut [&mut host, &mut at_origin, &mut at_replica],
        Some(0),
        Duration::from_secs(1),
    );
    assert_eq!(at_replica.video_frames, replica_seen);
    assert!(at_origin.video_frames >= origin_seen + 10);
    assert!(plane
        .stats()
        .stages
        .iter()
        .find(|s| s.stage_id == "replica")
        .is_none_or(|s| s.replicas == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resumes_when_its_source_reconnects_with_the_same_id() {
    let (plane, _rx) = start().await;
    let mut host = join(&plane, "origin", "host", Role::Publisher).await;
    let mut viewer = join(&plane, "replica", "viewer", Role::Subscriber).await;
    plane.replicate("origin", "host", "replica");
    run(
        &mut [&mut host, &mut viewer],
        Some(0),
        Duration::from_secs(1),
    );
    assert!(viewer.video_frames >= 10, "got {}", viewer.video_frames);

    // The source drops; the replica stays (the registry owns the reconnect window).
    plane.disconnect("host", None);
    run(
        &mut [&mut host, &mut viewer],
        None,
        Duration::from_millis(500),
    );
    let seen = viewer.video_sizes.len();

    // It comes back with the same participant id (a smaller frame size tells it apart).
    let mut again = join(&plane, "origin", "host", Role::Publisher).await;
    again.frame_size = 1500;
    run(
        &mut [&mut again, &mut viewer],
        Some(0),
        Duration::from_secs(2),
    );
    let after = &viewer.video_sizes[seen..];
    assert!(
        after.iter().filter(|&&n| n < 1600).count() >= 20,
        "the reconnected source feeds the replica again: {} frames",
        after.len()
    );
    // The viewer's decoder needed a keyframe from the new session.
    assert!(again.keyframe_requests >= 1);

    // Deleting the destination stage ends the replica with it.
    plane.close_stage("replica");
    run(
        &mut [&mut again, &mut viewer],
        Some(0),
        Duration::from_millis(500),
    );
    assert!(plane.stats().stages.iter().all(|s| s.stage_id != "replica"));
}
