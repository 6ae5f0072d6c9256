//! Media processing for the Outcall dialer: G.711 codecs, RTP framing, the jitter buffer,
//! DTMF (RFC 4733 events and in-band Goertzel detection), the SDP offer/answer subset an
//! outbound dialer needs, WAV prompt loading and two-channel call recording.
//!
//! This crate performs no network I/O; the RTP socket loop lives in `outcall-telephony`,
//! which feeds received datagrams through the parsers here. Every parser returns a
//! [`Result`] and never panics, whatever bytes it is given.
//!
//! ```
//! use outcall_media::{Codec, RtpPacket, RtpPacketizer, SAMPLES_PER_FRAME};
//!
//! let pcm = outcall_media::dtmf::generate_dtmf('5', 20, 8000);
//! let mut payload = Vec::new();
//! Codec::Pcmu.encode(&pcm, &mut payload);
//! let mut packetizer = RtpPacketizer::new(0x1234, Codec::Pcmu.payload_type(), 1, 0);
//! let mut datagram = Vec::new();
//! packetizer.packetize(&payload, SAMPLES_PER_FRAME as u32, &mut datagram);
//! let packet = RtpPacket::parse(&datagram).unwrap();
//! assert!(packet.marker);
//! assert_eq!(packet.payload.len(), SAMPLES_PER_FRAME);
//! ```

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod recorder;
pub mod rtp;
pub mod sdp;
pub mod wav;

pub use codec::Codec;
pub use dtmf::{GoertzelDetector, Rfc4733Collector, TelephoneEvent};
pub use jitter::{Frame, JitterBuffer, JitterStats};
pub use recorder::{CallRecorder, RecordingInfo};
pub use rtp::{RtpPacket, RtpPacketizer, CLOCK_RATE, SAMPLES_PER_FRAME};
pub use sdp::{Direction, MediaAnswer, MediaOffer};

/// Errors produced by the media layer.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The RTP datagram is shorter than its header claims.
    #[error("truncated rtp packet: {0}")]
    RtpTruncated(&'static str),
    /// The RTP version field is not 2.
    #[error("unsupported rtp version {0}")]
    RtpVersion(u8),
    /// The RTP padding count is zero or larger than the payload.
    #[error("invalid rtp padding: {0}")]
    RtpPadding(&'static str),
    /// An RFC 4733 telephone-event payload shorter than 4 bytes.
    #[error("telephone-event payload too short: {0} bytes, need 4")]
    EventTooShort(usize),
    /// The SDP has no `m=audio` line.
    #[error("sdp has no audio media line")]
    SdpNoAudio,
    /// Neither the session nor the audio media section has a `c=` line.
    #[error("sdp has no connection (c=) line for the audio stream")]
    SdpNoConnection,
    /// The remote side rejected the audio stream (port 0).
    #[error("sdp audio stream rejected (port 0)")]
    SdpStreamRejected,
    /// None of the payload types in the answer is a codec we offered.
    #[error("sdp answer has no codec in common with the offer")]
    SdpNoCommonCodec,
    /// The audio stream uses a transport other than RTP/AVP(F).
    #[error("unsupported sdp transport {0:?}")]
    SdpUnsupportedTransport(String),
    /// A line the answer depends on could not be parsed.
    #[error("malformed sdp line {line:?}: {reason}")]
    SdpMalformed {
        /// The offending line (truncated to 80 bytes).
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A WAV file uses a format we cannot convert.
    #[error("unsupported wav format: {0}")]
    UnsupportedWav(String),
    /// Error from the WAV reader/writer.
    #[error("wav error: {0}")]
    Wav(#[from] hound::Error),
    /// Plain I/O error.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A temporary file path removed when dropped.
    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(name: &str) -> Self {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let file = format!("outcall-media-{}-{n}-{name}", std::process::id());
            TempPath(std::env::temp_dir().join(file))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Deterministic LCG noise in [-amp, amp].
    pub fn lcg_noise(n: usize, amp: i32, seed: u32) -> Vec<i16> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = ((state >> 16) as i32 & 0xFFFF) - 32768;
                (v * amp / 32768) as i16
            })
            .collect()
    }

    pub fn sine(freq: f64, amp: f64, rate: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16)
            .collect()
    }
}
