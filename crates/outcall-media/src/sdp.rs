//! The SDP (RFC 4566 / RFC 3264) subset an outbound dialer needs: build an audio offer and
//! parse the answer.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::codec::Codec;
use crate::MediaError;

const TEL_EVENT: &str = "telephone-event";

/// Payload type conventionally used for telephone-event in our offers.
pub const DEFAULT_DTMF_PAYLOAD_TYPE: u8 = 101;

/// Our SDP offer for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOffer {
    /// Session id and version for the `o=` line.
    pub session_id: u64,
    /// Address we receive RTP on.
    pub local_ip: IpAddr,
    /// Port we receive RTP on.
    pub rtp_port: u16,
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Payload type offered for RFC 4733 telephone-event, if any.
    pub dtmf_payload_type: Option<u8>,
}

impl MediaOffer {
    /// Renders the offer as SDP with CRLF line endings.
    pub fn to_sdp(&self) -> String {
        let (ip_kind, ip) = match self.local_ip {
            IpAddr::V4(v4) => ("IP4", v4.to_string()),
            IpAddr::V6(v6) => ("IP6", v6.to_string()),
        };
        let mut codecs: Vec<Codec> = Vec::with_capacity(self.codecs.len());
        for c in &self.codecs {
            if !codecs.contains(c) {
                codecs.push(*c);
            }
        }
        let mut pts: Vec<String> = codecs
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        if let Some(pt) = self.dtmf_payload_type {
            pts.push(pt.to_string());
        }
        let id = self.session_id;
        let mut s = String::with_capacity(320);
        // Writing to a String cannot fail.
        let _ = write!(s, "v=0\r\n");
        let _ = write!(s, "o=outcall {id} {id} IN {ip_kind} {ip}\r\n");
        let _ = write!(s, "s=outcall\r\n");
        let _ = write!(s, "c=IN {ip_kind} {ip}\r\n");
        let _ = write!(s, "t=0 0\r\n");
        let _ = write!(s, "m=audio {} RTP/AVP {}\r\n", self.rtp_port, pts.join(" "));
        for c in &codecs {
            let _ = write!(s, "a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.name());
        }
        if let Some(pt) = self.dtmf_payload_type {
            let _ = write!(s, "a=rtpmap:{pt} telephone-event/8000\r\n");
            let _ = write!(s, "a=fmtp:{pt} 0-16\r\n");
        }
        let _ = write!(s, "a=ptime:20\r\n");
        let _ = write!(s, "a=sendrecv\r\n");
        s
    }
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv` (the default when absent).
    #[default]
    SendRecv,
    /// `a=sendonly`: the remote only sends.
    SendOnly,
    /// `a=recvonly`: the remote only receives.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    fn from_attribute(attr: &str) -> Option<Direction> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// What the remote side answered for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaAnswer {
    /// Where to send RTP.
    pub remote_ip: IpAddr,
    /// Where to send RTP.
    pub remote_port: u16,
    /// The chosen codec (first payload type of the answer's m= line that we offered).
    pub codec: Codec,
    /// The remote's telephone-event/8000 payload type, if it accepts RFC 4733.
    pub dtmf_payload_type: Option<u8>,
    /// The direction as written in the answer (from the remote side's point of view).
    pub direction: Direction,
}

#[derive(Default)]
struct AudioSection {
    port: u16,
    formats: Vec<u8>,
    connection: Option<Result<IpAddr, MediaError>>,
    direction: Option<Direction>,
    /// (payload type, encoding name, clock rate)
    rtpmaps: Vec<(u8, String, u32)>,
}

fn malformed(line: &str, reason: &'static str) -> MediaError {
    let mut end = line.len().min(80);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    MediaError::SdpMalformed {
        line: line[..end].to_string(),
        reason,
    }
}

fn parse_connection(line: &str, value: &str) -> Result<IpAddr, MediaError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(net), Some(kind), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed(line, "expected `c=IN IP4|IP6 <address>`"));
    };
    if net != "IN" {
        return Err(malformed(line, "network type is not IN"));
    }
    // Multicast addresses may carry /ttl/count suffixes.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| malformed(line, "invalid ip address"))?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(malformed(line, "address type does not match the address")),
    }
}

fn parse_media(line: &str, value: &str) -> Result<AudioSection, MediaError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(_media), Some(port), Some(proto)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed(
            line,
            "expected `m=audio <port> <proto> <fmt>...`",
        ));
    };
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port.parse().map_err(|_| malformed(line, "invalid port"))?;
    if !proto.eq_ignore_ascii_case("RTP/AVP") && !proto.eq_ignore_ascii_case("RTP/AVPF") {
        return Err(MediaError::SdpUnsupportedTransport(
            proto.chars().take(40).collect(),
        ));
    }
    let formats = parts
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|&pt| pt < 128)
        .collect();
    Ok(AudioSection {
        port,
        formats,
        ..AudioSection::default()
    })
}

/// Parses `a=rtpmap:<pt> <name>/<rate>[/<channels>]`; `None` if malformed (ignored).
fn parse_rtpmap(value: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    let pt: u8 = pt.trim().parse().ok()?;
    let mut enc = rest.trim().split('/');
    let name = enc.next()?.to_string();
    let rate: u32 = enc.next()?.trim().parse().ok()?;
    Some((pt, name, rate))
}

/// Parses an SDP answer and extracts what we need to send and receive audio.
///
/// Uses the first `m=audio` section; its `c=` line wins over the session-level one. The
/// codec is the first payload type in the m= line's order that maps to one of `offered`
/// (static types 0/8 need no rtpmap; dynamic types are mapped by their PCMU/PCMA rtpmap).
/// Accepts LF or CRLF line endings and ignores lines it does not understand. Never panics.
pub fn parse_answer(sdp: &str, offered: &[Codec]) -> Result<MediaAnswer, MediaError> {
    // Connection lines are parsed eagerly but only an error in the one used is reported.
    let mut session_connection: Option<Result<IpAddr, MediaError>> = None;
    let mut session_direction: Option<Direction> = None;
    let mut audio: Option<AudioSection> = None;
    // Where attribute lines go: session level, the first audio section, or elsewhere.
    #[derive(PartialEq)]
    enum Scope {
        Session,
        Audio,
        Other,
    }
    let mut scope = Scope::Session;

    for raw in sdp.lines() {
        let line = raw.trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "m" => {
                let is_audio = value.split_ascii_whitespace().next() == Some("audio");
                if audio.is_none() && is_audio {
                    audio = Some(parse_media(line, value)?);
                    scope = Scope::Audio;
                } else {
                    scope = Scope::Other;
                }
            }
            "c" => match scope {
                Scope::Session => session_connection = Some(parse_connection(line, value)),
                Scope::Audio => {
                    if let Some(a) = audio.as_mut() {
                        a.connection = Some(parse_connection(line, value));
                    }
                }
                Scope::Other => {}
            },
            "a" => {
                let (name, attr_value) = value.split_once(':').unwrap_or((value, ""));
                let name = name.trim();
                if let Some(dir) = Direction::from_attribute(name) {
                    match scope {
                        Scope::Session => session_direction = Some(dir),
                        Scope::Audio => {
                            if let Some(a) = audio.as_mut() {
                                a.direction = Some(dir);
                            }
                        }
                        Scope::Other => {}
                    }
                } else if name == "rtpmap" && scope == Scope::Audio {
                    if let (Some(a), Some(map)) = (audio.as_mut(), parse_rtpmap(attr_value)) {
                        a.rtpmaps.push(map);
                    }
                }
            }
            _ => {}
        }
    }

    let mut audio = audio.ok_or(MediaError::SdpNoAudio)?;
    if audio.port == 0 {
        return Err(MediaError::SdpStreamRejected);
    }
    let remote_ip = audio
        .connection
        .take()
        .or(session_connection)
        .ok_or(MediaError::SdpNoConnection)??;

    let rtpmap_of = |pt: u8| audio.rtpmaps.iter().find(|(p, _, _)| *p == pt);
    let codec = audio
        .formats
        .iter()
        .find_map(|&pt| {
            let codec = match rtpmap_of(pt) {
                Some((_, name, 8000)) if name.eq_ignore_ascii_case("PCMU") => Some(Codec::Pcmu),
                Some((_, name, 8000)) if name.eq_ignore_ascii_case("PCMA") => Some(Codec::Pcma),
                Some(_) => None,
                None => Codec::from_payload_type(pt),
            };
            codec.filter(|c| offered.contains(c))
        })
        .ok_or(MediaError::SdpNoCommonCodec)?;
    let is_telephone_event = |pt: u8| match rtpmap_of(pt) {
        Some((_, name, 8000)) => name.eq_ignore_ascii_case(TEL_EVENT),
        _ => false,
    };
    let dtmf_payload_type = audio
        .formats
        .iter()
        .copied()
        .find(|&pt| is_telephone_event(pt));

    Ok(MediaAnswer {
        remote_ip,
        remote_port: audio.port,
        codec,
        dtmf_payload_type,
        direction: audio.direction.or(session_direction).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const BOTH: &[Codec] = &[Codec::Pcmu, Codec::Pcma];

    #[test]
    fn offer_exact_text() {
        let offer = MediaOffer {
            session_id: 42,
            local_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            rtp_port: 20000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            dtmf_payload_type: Some(101),
        };
        let expected = "v=0\r\n\
            o=outcall 42 42 IN IP4 10.0.0.5\r\n\
            s=outcall\r\n\
            c=IN IP4 10.0.0.5\r\n\
            t=0 0\r\n\
            m=audio 20000 RTP/AVP 0 8 101\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\n\
            a=ptime:20\r\n\
            a=sendrecv\r\n";
        assert_eq!(offer.to_sdp(), expected);
    }

    #[test]
    fn offer_ipv6_and_variants() {
        let offer = MediaOffer {
            session_id: 7,
            local_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            rtp_port: 4000,
            codecs: vec![Codec::Pcma, Codec::Pcma],
            dtmf_payload_type: None,
        };
        let sdp = offer.to_sdp();
        assert!(sdp.contains("o=outcall 7 7 IN IP6 ::1\r\n"));
        assert!(sdp.contains("c=IN IP6 ::1\r\n"));
        assert!(sdp.contains("m=audio 4000 RTP/AVP 8\r\n"));
        assert!(!sdp.contains("telephone-event"));
        assert!(!sdp.contains("PCMU"));
        // Our own offer parses as an answer.
        let ans = parse_answer(&sdp, BOTH).unwrap();
        assert_eq!(ans.remote_ip, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(ans.codec, Codec::Pcma);
    }

    #[test]
    fn sipp_style_answer() {
        let sdp = "v=0\r\n\
            o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
            s=-\r\n\
            c=IN IP4 127.0.0.1\r\n\
            t=0 0\r\n\
            m=audio 6000 RTP/AVP 0\r\n\
            a=rtpmap:0 PCMU/8000\r\n";
        let ans = parse_answer(sdp, BOTH).unwrap();
        assert_eq!(
            ans,
            MediaAnswer {
                remote_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                remote_port: 6000,
                codec: Codec::Pcmu,
                dtmf_payload_type: None,
                direction: Direction::SendRecv,
            }
        );
        // Same with bare LF line endings.
        let lf = sdp.replace("\r\n", "\n");
        assert_eq!(parse_answer(&lf, BOTH).unwrap(), ans);
    }

    #[test]
    fn pcma_chosen_when_only_pcma_answered() {
        let sdp = "v=0\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 30000 RTP/AVP 8 101\n\
            a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n";
        let ans = parse_answer(sdp, BOTH).unwrap();
        assert_eq!(ans.codec, Codec::Pcma);
        assert_eq!(ans.dtmf_payload_type, Some(101));
        // First in the answer's order wins.
        let sdp = "c=IN IP4 192.0.2.1\nm=audio 30000 RTP/AVP 8 0\n";
        assert_eq!(parse_answer(sdp, BOTH).unwrap().codec, Codec::Pcma);
        // ... but only among codecs we offered.
        assert_eq!(
            parse_answer(sdp, &[Codec::Pcmu]).unwrap().codec,
            Codec::Pcmu
        );
        let only_pcmu = "c=IN IP4 192.0.2.1\nm=audio 30000 RTP/AVP 0\n";
        assert!(matches!(
            parse_answer(only_pcmu, &[Codec::Pcma]),
            Err(MediaError::SdpNoCommonCodec)
        ));
    }

    #[test]
    fn telephone_event_and_dynamic_codec() {
        let sdp = "v=0\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
            m=audio 5004 RTP/AVP 96 97 98\r\n\
            a=rtpmap:96 opus/48000/2\r\n\
            a=rtpmap:97 pcma/8000\r\n\
            a=rtpmap:98 telephone-event/8000\r\n\
            a=rtpmap:99 telephone-event/16000\r\n\
            a=sendonly\r\n";
        let ans = parse_answer(sdp, BOTH).unwrap();
        assert_eq!(ans.codec, Codec::Pcma);
        assert_eq!(ans.dtmf_payload_type, Some(98));
        assert_eq!(ans.direction, Direction::SendOnly);
        // telephone-event at another clock rate is not usable.
        let sdp = "c=IN IP4 198.51.100.7\nm=audio 5004 RTP/AVP 0 99\n\
            a=rtpmap:99 telephone-event/16000\n";
        assert_eq!(parse_answer(sdp, BOTH).unwrap().dtmf_payload_type, None);
    }

    #[test]
    fn media_level_connection_and_direction_win() {
        let sdp = "v=0\nc=IN IP4 192.0.2.1\na=recvonly\nt=0 0\n\
            m=audio 7000 RTP/AVP 0\nc=IN IP4 192.0.2.99\na=inactive\n\
            m=audio 8000 RTP/AVP 8\nc=IN IP4 192.0.2.200\n";
        let ans = parse_answer(sdp, BOTH).unwrap();
        assert_eq!(ans.remote_ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)));
        assert_eq!(ans.remote_port, 7000);
        assert_eq!(ans.codec, Codec::Pcmu);
        assert_eq!(ans.direction, Direction::Inactive);
        // A broken session-level c= line does not matter when the media level has one.
        let sdp = "c=IN IP4 nonsense\nm=audio 7000 RTP/AVP 0\nc=IN IP4 192.0.2.99\n";
        assert!(parse_answer(sdp, BOTH).is_ok());
        // Session-level direction applies when the media section has none.
        let sdp = "c=IN IP4 192.0.2.1\na=recvonly\nm=video 9 RTP/AVP 31\na=sendonly\n\
            m=audio 7000 RTP/AVP 0\n";
        let ans = parse_answer(sdp, BOTH).unwrap();
        assert_eq!(ans.direction, Direction::RecvOnly);
        assert_eq!(ans.remote_ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn errors() {
        let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert!(matches!(
            parse_answer(no_c, BOTH),
            Err(MediaError::SdpNoConnection)
        ));
        let rejected = "c=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\n";
        assert!(matches!(
            parse_answer(rejected, BOTH),
            Err(MediaError::SdpStreamRejected)
        ));
        let no_audio = "v=0\nc=IN IP4 1.2.3.4\nm=video 5000 RTP/AVP 31\n";
        assert!(matches!(
            parse_answer(no_audio, BOTH),
            Err(MediaError::SdpNoAudio)
        ));
        let srtp = "c=IN IP4 1.2.3.4\nm=audio 5000 RTP/SAVP 0\n";
        assert!(matches!(
            parse_answer(srtp, BOTH),
            Err(MediaError::SdpUnsupportedTransport(_))
        ));
        let bad_ip = "c=IN IP4 999.1.1.1\nm=audio 5000 RTP/AVP 0\n";
        assert!(matches!(
            parse_answer(bad_ip, BOTH),
            Err(MediaError::SdpMalformed { .. })
        ));
        let bad_port = "c=IN IP4 1.1.1.1\nm=audio 70000 RTP/AVP 0\n";
        assert!(matches!(
            parse_answer(bad_port, BOTH),
            Err(MediaError::SdpMalformed { .. })
        ));
        let mismatch = "c=IN IP6 1.1.1.1\nm=audio 5000 RTP/AVP 0\n";
        assert!(matches!(
            parse_answer(mismatch, BOTH),
            Err(MediaError::SdpMalformed { .. })
        ));
        assert!(matches!(
            parse_answer("", BOTH),
            Err(MediaError::SdpNoAudio)
        ));
        let msg = parse_answer(no_c, BOTH).unwrap_err().to_string();
        assert_eq!(msg, msg.to_lowercase());
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            "\u{0}\u{1}garbage",
            "=\n==\nm=\nm=audio\nm=audio x\nc=\nc=IN\na=rtpmap:\na=rtpmap:x y/z",
            "m=audio 5000 RTP/AVP 0\na=rtpmap:0\na=rtpmap:0 PCMU\na=rtpmap:300 PCMU/8000",
            "c=IN IP4 1.2.3.4/127/3\nm=audio 5000/2 RTP/AVP 0 abc 999 8",
            "é=ü\nm=audioé 1 2\nc=IN IP4 ✓\n",
            "c=IN IP4 ✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓✓\n",
        ];
        for s in samples {
            let _ = parse_answer(s, BOTH);
        }
        let multicast = "c=IN IP4 1.2.3.4/127/3\nm=audio 5000/2 RTP/AVP 0 abc 999 8";
        assert_eq!(parse_answer(multicast, BOTH).unwrap().remote_port, 5000);
        // Pseudo-random byte soup made of SDP-ish fragments.
        let pieces = [
            "v=0",
            "c=IN IP4 10.0.0.1",
            "m=audio 1 RTP/AVP 0",
            "a=rtpmap:",
            "\r\n",
            "\n",
        ];
        let mut state = 1u32;
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..12 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let p = pieces[(state >> 24) as usize % pieces.len()];
                let cut = (state >> 8) as usize % (p.len() + 1);
                s.push_str(&p[..cut]);
                s.push(char::from((state & 0x7F) as u8));
            }
            let _ = parse_answer(&s, BOTH);
        }
        // Raw random bytes.
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            let _ = parse_answer(&String::from_utf8_lossy(&bytes), BOTH);
        }
    }
}
