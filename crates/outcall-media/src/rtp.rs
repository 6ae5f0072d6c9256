//! RTP (RFC 3550) packet parsing and packetization.

use crate::MediaError;

/// Samples in one 20 ms frame at 8 kHz.
pub const SAMPLES_PER_FRAME: usize = 160;
/// RTP clock rate of G.711 and telephone-event.
pub const CLOCK_RATE: u32 = 8000;

const HEADER_LEN: usize = 12;

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Always 2 for packets accepted by [`RtpPacket::parse`].
    pub version: u8,
    /// Whether the P bit was set (the padding is already stripped from `payload`).
    pub padding: bool,
    /// The M bit.
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Payload after CSRCs and header extension, without padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses an RTP datagram. Never panics; rejects version != 2, truncated headers,
    /// truncated CSRC lists or extensions, and inconsistent padding.
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, MediaError> {
        if buf.len() < HEADER_LEN {
            return Err(MediaError::RtpTruncated("shorter than the 12-byte header"));
        }
        let b0 = buf[0];
        let version = b0 >> 6;
        if version != 2 {
            return Err(MediaError::RtpVersion(version));
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let csrc_count = (b0 & 0x0F) as usize;
        let marker = buf[1] & 0x80 != 0;
        let payload_type = buf[1] & 0x7F;
        let sequence = u16::from_be_bytes([buf[2], buf[3]]);
        let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);

        let mut offset = HEADER_LEN + csrc_count * 4;
        if buf.len() < offset {
            return Err(MediaError::RtpTruncated("csrc list"));
        }
        if extension {
            let ext = buf
                .get(offset..offset + 4)
                .ok_or(MediaError::RtpTruncated("header extension"))?;
            let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
            offset += 4 + words * 4;
            if buf.len() < offset {
                return Err(MediaError::RtpTruncated("header extension body"));
            }
        }
        let mut end = buf.len();
        if padding {
            let pad = buf[buf.len() - 1] as usize;
            if pad == 0 {
                return Err(MediaError::RtpPadding("padding count is zero"));
            }
            if pad > end - offset {
                return Err(MediaError::RtpPadding("padding longer than the payload"));
            }
            end -= pad;
        }
        Ok(RtpPacket {
            version,
            padding,
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            payload: &buf[offset..end],
        })
    }
}

/// Builds outgoing RTP packets for one stream (one SSRC).
#[derive(Debug, Clone)]
pub struct RtpPacketizer {
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    talkspurt_start: bool,
}

impl RtpPacketizer {
    /// Creates a packetizer; the first packet carries `initial_seq` / `initial_ts` and the
    /// marker bit.
    pub fn new(ssrc: u32, payload_type: u8, initial_seq: u16, initial_ts: u32) -> Self {
        RtpPacketizer {
            ssrc,
            payload_type: payload_type & 0x7F,
            sequence: initial_seq,
            timestamp: initial_ts,
            talkspurt_start: true,
        }
    }

    /// Writes a 12-byte header plus `payload` into `out` (cleared first), then advances the
    /// sequence number by one and the timestamp by `samples` (both wrapping). The marker bit
    /// is set on the first packet of a talkspurt.
    pub fn packetize(&mut self, payload: &[u8], samples: u32, out: &mut Vec<u8>) {
        let marker = std::mem::take(&mut self.talkspurt_start);
        self.write_header(self.payload_type, marker, out);
        out.extend_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Marks the next audio packet as the start of a talkspurt (marker bit), e.g. after a
    /// period of silence suppression or after sending DTMF events.
    pub fn start_talkspurt(&mut self) {
        self.talkspurt_start = true;
    }

    /// Writes an RFC 4733 event packet into `out` (cleared first) using payload type
    /// `event_pt` and the *current* timestamp, which is not advanced: all packets of one
    /// event share the timestamp of the event start. The sequence number still advances by
    /// one, as RFC 3550 requires for every packet sent. Use
    /// [`RtpPacketizer::advance_timestamp`] to account for the event duration before
    /// resuming audio.
    pub fn write_event(
        &mut self,
        event_pt: u8,
        payload: &[u8; 4],
        marker: bool,
        out: &mut Vec<u8>,
    ) {
        self.write_header(event_pt & 0x7F, marker, out);
        out.extend_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// Advances the timestamp without sending (e.g. by the duration of a DTMF event or of
    /// suppressed silence).
    pub fn advance_timestamp(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Sequence number of the next packet.
    pub fn sequence(&self) -> u16 {
        self.sequence
    }

    /// Timestamp of the next packet.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn write_header(&self, payload_type: u8, marker: bool, out: &mut Vec<u8>) {
        out.clear();
        out.push(0x80);
        out.push(if marker { 0x80 } else { 0 } | payload_type);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_exact() {
        let mut p = RtpPacketizer::new(0xDEADBEEF, 0, 0x1234, 0x0102_0304);
        let mut out = vec![9, 9, 9];
        p.packetize(&[0xFF, 0x7F], 160, &mut out);
        assert_eq!(
            out,
            [0x80, 0x80, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, 0xFF, 0x7F]
        );
        p.packetize(&[0xD5], 160, &mut out);
        assert_eq!(
            out,
            [0x80, 0x00, 0x12, 0x35, 0x01, 0x02, 0x03, 0xA4, 0xDE, 0xAD, 0xBE, 0xEF, 0xD5]
        );
    }

    #[test]
    fn round_trip() {
        let mut p = RtpPacketizer::new(42, 8, 100, 1000);
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut out = Vec::new();
        for i in 0..5u16 {
            p.packetize(&payload, 160, &mut out);
            let pkt = RtpPacket::parse(&out).expect("valid packet");
            assert_eq!(pkt.version, 2);
            assert!(!pkt.padding);
            assert_eq!(pkt.marker, i == 0);
            assert_eq!(pkt.payload_type, 8);
            assert_eq!(pkt.sequence, 100 + i);
            assert_eq!(pkt.timestamp, 1000 + 160 * i as u32);
            assert_eq!(pkt.ssrc, 42);
            assert_eq!(pkt.payload, &payload[..]);
        }
        assert_eq!(p.sequence(), 105);
        assert_eq!(p.timestamp(), 1800);
    }

    #[test]
    fn wrap_around() {
        let mut p = RtpPacketizer::new(1, 0, 65535, u32::MAX - 79);
        let mut out = Vec::new();
        p.packetize(&[0; 160], 160, &mut out);
        let pkt = RtpPacket::parse(&out).unwrap();
        assert_eq!((pkt.sequence, pkt.timestamp), (65535, u32::MAX - 79));
        p.packetize(&[0; 160], 160, &mut out);
        let pkt = RtpPacket::parse(&out).unwrap();
        assert_eq!((pkt.sequence, pkt.timestamp), (0, 80));
    }

    #[test]
    fn marker_only_on_talkspurt_start() {
        let mut p = RtpPacketizer::new(1, 0, 0, 0);
        let mut out = Vec::new();
        let mut markers = Vec::new();
        for i in 0..6 {
            if i == 3 {
                p.start_talkspurt();
            }
            p.packetize(&[0; 4], 160, &mut out);
            markers.push(RtpPacket::parse(&out).unwrap().marker);
        }
        assert_eq!(markers, [true, false, false, true, false, false]);
    }

    #[test]
    fn event_keeps_timestamp() {
        let mut p = RtpPacketizer::new(7, 0, 10, 500);
        let mut out = Vec::new();
        p.packetize(&[0; 160], 160, &mut out);
        for i in 0..3 {
            p.write_event(101, &[1, 0x0A, 0, 160], i == 0, &mut out);
            let pkt = RtpPacket::parse(&out).unwrap();
            assert_eq!(pkt.payload_type, 101);
            assert_eq!(pkt.timestamp, 660);
            assert_eq!(pkt.sequence, 11 + i as u16);
            assert_eq!(pkt.marker, i == 0);
            assert_eq!(pkt.payload, &[1, 0x0A, 0, 160]);
        }
        assert_eq!(p.timestamp(), 660);
        assert_eq!(p.sequence(), 14);
        p.advance_timestamp(480);
        assert_eq!(p.timestamp(), 1140);
    }

    #[test]
    fn parses_csrc_extension_and_padding() {
        let mut buf = vec![0xB2, 0x80 | 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 5]); // 2 CSRCs
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // 1-word extension
        buf.extend_from_slice(&[10, 20, 30]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let pkt = RtpPacket::parse(&buf).unwrap();
        assert!(pkt.padding && pkt.marker);
        assert_eq!(pkt.payload_type, 96);
        assert_eq!(pkt.sequence, 1);
        assert_eq!(pkt.timestamp, 2);
        assert_eq!(pkt.ssrc, 3);
        assert_eq!(pkt.payload, &[10, 20, 30]);
    }

    #[test]
    fn rejects_bad_packets() {
        let good = [0x80u8, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        assert!(RtpPacket::parse(&good).is_ok());
        assert!(RtpPacket::parse(&good[..11]).is_err());
        assert!(RtpPacket::parse(&[]).is_err());
        let mut v1 = good;
        v1[0] = 0x40;
        assert!(matches!(
            RtpPacket::parse(&v1),
            Err(MediaError::RtpVersion(1))
        ));
        let mut csrc = good;
        csrc[0] = 0x81;
        assert!(RtpPacket::parse(&csrc).is_err());
        let mut ext = good.to_vec();
        ext[0] = 0x90;
        assert!(RtpPacket::parse(&ext).is_err());
        ext.extend_from_slice(&[0, 0, 0, 2, 1, 2, 3, 4]); // claims 2 words, has 1
        assert!(RtpPacket::parse(&ext).is_err());
        let mut pad = good.to_vec();
        pad[0] = 0xA0;
        pad.push(0);
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(MediaError::RtpPadding(_))
        ));
        *pad.last_mut().unwrap() = 2; // padding longer than the 1-byte payload
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(MediaError::RtpPadding(_))
        ));
        *pad.last_mut().unwrap() = 1; // padding consumes the whole payload: ok
        assert_eq!(RtpPacket::parse(&pad).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678u32;
        let mut buf = Vec::new();
        for round in 0..20_000 {
            buf.clear();
            let len = round % 64;
            for _ in 0..len {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                buf.push((state >> 24) as u8);
            }
            if len > 0 && round % 2 == 0 {
                buf[0] = (buf[0] & 0x3F) | 0x80; // version 2 to reach the deeper checks
            }
            if let Ok(pkt) = RtpPacket::parse(&buf) {
                assert!(pkt.payload.len() + 12 <= buf.len());
            }
        }
        // Exhaustive over the first byte for short buffers.
        for b0 in 0..=255u8 {
            for len in 0..40 {
                let mut v = vec![0xFFu8; len];
                if len > 0 {
                    v[0] = b0;
                }
                let _ = RtpPacket::parse(&v);
            }
        }
    }
}
