//! The RTP media of one call.
//!
//! A session owns one UDP socket and runs on its own task. A 20 ms clock paces what we send
//! (the prompt, G.711-encoded, with a marker bit on the first packet and timestamps advancing
//! by 160 samples); what arrives goes through the jitter buffer, is decoded, scanned for
//! in-band DTMF and written to the right channel of the recording. RFC 4733 events are
//! collected separately; once a call has sent one, in-band detection is ignored so a digit
//! sent both ways is counted once.
//!
//! The recording is time-aligned: the left channel is what we sent at the tick it was sent,
//! the right channel is what we received at its RTP timestamp, anchored at the arrival of the
//! stream's first packet; gaps are silence.

use crate::engine::Prompt;
use outcall_media::codec::Codec;
use outcall_media::dtmf::{event_to_digit, GoertzelDetector, Rfc4733Collector, TelephoneEvent};
use outcall_media::jitter::JitterBuffer;
use outcall_media::recorder::{CallRecorder, RecordingInfo};
use outcall_media::rtp::{RtpPacket, RtpPacketizer, SAMPLES_PER_FRAME};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Reorder tolerance of the receive jitter buffer.
pub const JITTER_TOLERANCE_MS: u32 = 50;
/// Payload type we offer for telephone-event.
pub const DTMF_PAYLOAD_TYPE: u8 = 101;

/// Orders to a running session.
#[derive(Debug, Clone)]
pub enum MediaCommand {
    /// Where to send, in which codec (from the SDP answer, early or final).
    Remote {
        addr: SocketAddr,
        codec: Codec,
        dtmf_payload_type: Option<u8>,
    },
    /// Start sending the prompt from its beginning.
    Play,
    /// Stop and return the statistics.
    Stop,
}

/// News from a running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The first RTP packet arrived.
    FirstPacket,
    /// The prompt has been sent completely.
    PromptDone,
    /// A DTMF digit, from RFC 4733 or in-band.
    Digit(char),
}

/// What a finished session reports.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub jitter_ms: f64,
    pub recording: Option<RecordingInfo>,
    pub recording_error: Option<String>,
}

/// Handle to a running media session.
pub struct MediaSession {
    pub local_port: u16,
    commands: mpsc::UnboundedSender<MediaCommand>,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    join: JoinHandle<MediaStats>,
}

impl MediaSession {
    /// Binds a socket on `ip` (any free port) and starts the session task.
    pub async fn start(
        ip: IpAddr,
        prompt: Option<Prompt>,
        record_to: Option<PathBuf>,
    ) -> std::io::Result<MediaSession> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local_port = socket.local_addr()?.port();
        let recorder = match record_to {
            Some(path) => Some(
                CallRecorder::create(&path)
                    .map_err(|e| std::io::Error::other(format!("recording: {e}")))?,
            ),
            None => None,
        };
        let (ctx, crx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        let task = SessionTask::new(socket, prompt, recorder, etx);
        // The media task logs under the call's span (its trace id).
        let join = tokio::spawn(tracing::Instrument::instrument(
            task.run(crx),
            tracing::Span::current(),
        ));
        Ok(MediaSession {
            local_port,
            commands: ctx,
            events: erx,
            join,
        })
    }

    pub fn send(&self, cmd: MediaCommand) {
        let _ = self.commands.send(cmd);
    }

    /// Stops the session and waits for its statistics (and the recording to be closed).
    pub async fn stop(self) -> MediaStats {
        let _ = self.commands.send(MediaCommand::Stop);
        self.join.await.unwrap_or_default()
    }
}

struct Remote {
    addr: SocketAddr,
    codec: Codec,
    dtmf_pt: u8,
}

struct RxStream {
    ssrc: u32,
    first_ts: u32,
    offset_samples: u64,
    codec: Codec,
    jitter: JitterBuffer,
}

struct SessionTask {
    socket: UdpSocket,
    prompt: Option<Prompt>,
    recorder: Option<CallRecorder>,
    events: mpsc::UnboundedSender<MediaEvent>,
    started: Instant,
    remote: Option<Remote>,
    packetizer: RtpPacketizer,
    ssrc: u32,
    playing: Option<usize>,
    tx_written: u64,
    rx_written: u64,
    rx: Option<RxStream>,
    collector: Rfc4733Collector,
    goertzel: GoertzelDetector,
    rfc4733_seen: bool,
    stats: MediaStats,
    lost_before: u64,
    pcm: Vec<i16>,
    payload: Vec<u8>,
    packet: Vec<u8>,
}

impl SessionTask {
    fn new(
        socket: UdpSocket,
        prompt: Option<Prompt>,
        recorder: Option<CallRecorder>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Self {
        let ssrc: u32 = rand::random();
        let seq: u16 = rand::random();
        let ts: u32 = rand::random();
        SessionTask {
            socket,
            prompt,
            recorder,
            events,
            started: Instant::now(),
            remote: None,
            packetizer: RtpPacketizer::new(ssrc, 0, seq, ts),
            ssrc,
            playing: None,
            tx_written: 0,
            rx_written: 0,
            rx: None,
            collector: Rfc4733Collector::new(),
            goertzel: GoertzelDetector::new(),
            rfc4733_seen: false,
            stats: MediaStats::default(),
            lost_before: 0,
            pcm: Vec::with_capacity(SAMPLES_PER_FRAME),
            payload: Vec::with_capacity(SAMPLES_PER_FRAME),
            packet: Vec::with_capacity(SAMPLES_PER_FRAME + 12),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<MediaCommand>) -> MediaStats {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut ticks: u64 = 0;
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(MediaCommand::Remote { addr, codec, dtmf_payload_type }) => {
                        let dtmf_pt = dtmf_payload_type.unwrap_or(DTMF_PAYLOAD_TYPE);
                        self.packetizer = RtpPacketizer::new(
                            self.ssrc,
                            codec.payload_type(),
                            self.packetizer.sequence(),
                            self.packetizer.timestamp(),
                        );
                        self.remote = Some(Remote { addr, codec, dtmf_pt });
                    }
                    Some(MediaCommand::Play) => {
                        if self.prompt.is_some() {
                            self.playing = Some(0);
                            self.packetizer.start_talkspurt();
                        } else {
                            let _ = self.events.send(MediaEvent::PromptDone);
                        }
                    }
                    Some(MediaCommand::Stop) | None => break,
                },
                _ = tick.tick() => {
                    self.on_tick(ticks).await;
                    ticks += 1;
                }
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, _from)) = r {
                        self.on_packet(&buf[..n]);
                    }
                }
            }
        }
        self.finish()
    }

    async fn on_tick(&mut self, tick: u64) {
        let (Some(pos), Some(remote), Some(prompt)) = (self.playing, &self.remote, &self.prompt)
        else {
            return;
        };
        let samples = &prompt.samples;
        let end = (pos + SAMPLES_PER_FRAME).min(samples.len());
        self.pcm.clear();
        self.pcm.extend_from_slice(&samples[pos..end]);
        self.pcm.resize(SAMPLES_PER_FRAME, 0);
        self.payload.clear();
        remote.codec.encode(&self.pcm, &mut self.payload);
        self.packetizer
            .packetize(&self.payload, SAMPLES_PER_FRAME as u32, &mut self.packet);
        if self.socket.send_to(&self.packet, remote.addr).await.is_ok() {
            self.stats.packets_sent += 1;
        }
        if let Some(rec) = &mut self.recorder {
            let at = tick * SAMPLES_PER_FRAME as u64;
            if at > self.tx_written {
                rec.push_tx(&vec![0; (at - self.tx_written) as usize]);
                self.tx_written = at;
            }
            rec.push_tx(&self.pcm);
            self.tx_written += SAMPLES_PER_FRAME as u64;
        }
        if end >= samples.len() {
            self.playing = None;
            let _ = self.events.send(MediaEvent::PromptDone);
        } else {
            self.playing = Some(end);
        }
    }

    fn on_packet(&mut self, data: &[u8]) {
        let Ok(pkt) = RtpPacket::parse(data) else {
            return;
        };
        self.stats.packets_received += 1;
        if self.stats.packets_received == 1 {
            let _ = self.events.send(MediaEvent::FirstPacket);
        }
        let dtmf_pt = self
            .remote
            .as_ref()
            .map(|r| r.dtmf_pt)
            .unwrap_or(DTMF_PAYLOAD_TYPE);
        if pkt.payload_type == dtmf_pt {
            if let Ok(ev) = TelephoneEvent::parse(pkt.payload) {
                self.rfc4733_seen = true;
                if let Some(d) = self.collector.on_packet(pkt.timestamp, &ev) {
                    if event_to_digit(ev.event).is_some() {
                        let _ = self.events.send(MediaEvent::Digit(d));
                    }
                }
            }
            return;
        }
        let Some(codec) = Codec::from_payload_type(pkt.payload_type) else {
            return;
        };
        let now_samples = self.started.elapsed().as_millis() as u64 * 8;
        let restart = self.rx.as_ref().is_none_or(|s| s.ssrc != pkt.ssrc);
        if restart {
            self.flush_rx();
            self.rx = Some(RxStream {
                ssrc: pkt.ssrc,
                first_ts: pkt.timestamp,
                offset_samples: now_samples.max(self.rx_written),
                codec,
                jitter: JitterBuffer::new(JITTER_TOLERANCE_MS),
            });
        }
        let Some(stream) = self.rx.as_mut() else {
            return;
        };
        stream.codec = codec;
        stream
            .jitter
            .record_arrival(pkt.timestamp, self.started.elapsed().as_secs_f64() * 1e3);
        stream
            .jitter
            .push(pkt.sequence, pkt.timestamp, pkt.payload.to_vec());
        while let Some(frame) = self.rx.as_mut().and_then(|s| s.jitter.pop()) {
            self.play_out(frame.timestamp, &frame.payload);
        }
    }

    fn play_out(&mut self, ts: u32, payload: &[u8]) {
        let Some(stream) = self.rx.as_ref() else {
            return;
        };
        self.pcm.clear();
        stream.codec.decode(payload, &mut self.pcm);
        let at = stream.offset_samples + u64::from(ts.wrapping_sub(stream.first_ts));
        if !self.rfc4733_seen {
            for d in self.goertzel.feed(&self.pcm) {
                let _ = self.events.send(MediaEvent::Digit(d));
            }
        }
        if let Some(rec) = &mut self.recorder {
            if at > self.rx_written {
                let gap = (at - self.rx_written).min(8000 * 3600);
                rec.push_rx(&vec![0; gap as usize]);
                self.rx_written += gap;
            }
            let skip = (self.rx_written.saturating_sub(at) as usize).min(self.pcm.len());
            rec.push_rx(&self.pcm[skip..]);
            self.rx_written += (self.pcm.len() - skip) as u64;
        }
    }

    fn flush_rx(&mut self) {
        let Some(mut stream) = self.rx.take() else {
            return;
        };
        let frames = stream.jitter.drain();
        let st = stream.jitter.stats();
        self.lost_before += st.lost;
        self.stats.jitter_ms = stream.jitter.jitter_ms();
        self.rx = Some(stream);
        for f in frames {
            self.play_out(f.timestamp, &f.payload);
        }
        self.rx = None;
    }

    fn finish(mut self) -> MediaStats {
        self.flush_rx();
        self.stats.packets_lost = self.lost_before;
        if let Some(rec) = self.recorder.take() {
            match rec.finish() {
                Ok(info) => self.stats.recording = Some(info),
                Err(e) => self.stats.recording_error = Some(e.to_string()),
            }
        }
        self.stats
    }
}
