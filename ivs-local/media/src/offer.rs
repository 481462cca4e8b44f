//! Checks on an SDP offer before it reaches str0m: a publisher must offer something to send, a
//! subscriber something to receive. str0m parses the SDP itself; this only reads the m-lines
//! and their direction attributes so that a wrong offer gets a clear error instead of a
//! session that never carries media.

use crate::{MediaError, Role};

/// What one m-line of an offer says, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OfferedMedia {
    pub kind: Kind,
    pub sends: bool,
    pub receives: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Audio,
    Video,
    Other,
}

/// The audio/video m-lines of an SDP, in order.
pub(crate) fn offered_media(sdp: &str) -> Vec<OfferedMedia> {
    let mut out: Vec<OfferedMedia> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = match rest.split(' ').next() {
                Some("audio") => Kind::Audio,
                Some("video") => Kind::Video,
                _ => Kind::Other,
            };
            // RFC 3264: sendrecv is the default when no direction attribute is present.
            out.push(OfferedMedia {
                kind,
                sends: true,
                receives: true,
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        match line {
            "a=sendonly" => (m.sends, m.receives) = (true, false),
            "a=recvonly" => (m.sends, m.receives) = (false, true),
            "a=inactive" => (m.sends, m.receives) = (false, false),
            "a=sendrecv" => (m.sends, m.receives) = (true, true),
            _ => {}
        }
    }
    out.retain(|m| m.kind != Kind::Other);
    out
}

/// Rejects an offer that cannot work for `role`.
pub(crate) fn check_offer(sdp: &str, role: Role) -> Result<(), MediaError> {
    let media = offered_media(sdp);
    if media.is_empty() {
        return Err(MediaError::InvalidOffer(
            "the offer has no audio or video m-line".into(),
        ));
    }
    let usable = match role {
        Role::Publisher => media.iter().any(|m| m.sends),
        Role::Subscriber => media.iter().any(|m| m.receives),
    };
    if !usable {
        let want = match role {
            Role::Publisher => "sendonly or sendrecv (a publisher sends media)",
            Role::Subscriber => "recvonly or sendrecv (a subscriber receives media)",
        };
        return Err(MediaError::InvalidOffer(format!(
            "no audio or video m-line is {want}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";
    const SUBSCRIBE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn reads_kinds_and_directions() {
        let m = offered_media(SUBSCRIBE);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, Kind::Audio);
        assert_eq!(m[1].kind, Kind::Video);
        assert!(m.iter().all(|m| m.receives && !m.sends));
        let m = offered_media(PUBLISH);
        assert!(m.iter().all(|m| m.sends && !m.receives));
    }

    #[test]
    fn missing_direction_means_sendrecv() {
        let m = offered_media("m=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:0\n");
        assert_eq!(
            m,
            vec![OfferedMedia {
                kind: Kind::Video,
                sends: true,
                receives: true
            }]
        );
    }

    #[test]
    fn roles_must_match_directions() {
        assert!(check_offer(PUBLISH, Role::Publisher).is_ok());
        assert!(check_offer(SUBSCRIBE, Role::Subscriber).is_ok());
        assert!(matches!(
            check_offer(SUBSCRIBE, Role::Publisher),
            Err(MediaError::InvalidOffer(_))
        ));
        assert!(matches!(
            check_offer(PUBLISH, Role::Subscriber),
            Err(MediaError::InvalidOffer(_))
        ));
        assert!(matches!(
            check_offer("v=0\r\n", Role::Subscriber),
            Err(MediaError::InvalidOffer(_))
        ));
    }
}
