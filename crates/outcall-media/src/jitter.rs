//! Receive-side jitter buffer: reorders RTP audio frames by sequence number and tracks loss,
//! lateness, duplicates and the RFC 3550 interarrival jitter.

use std::collections::BTreeMap;

use crate::rtp::CLOCK_RATE;

/// Nominal frame duration used to turn the reorder tolerance into a frame count.
const FRAME_MS: u32 = 20;
/// Hard cap on buffered frames so a misbehaving peer cannot grow memory without bound.
const MAX_FRAMES: usize = 1024;
/// Forward jump (in packets) beyond which a packet is treated as a possible stream restart.
const MAX_DROPOUT: i64 = 3000;
/// Backward jump beyond which a packet is treated as a possible stream restart.
const MAX_MISORDER: i64 = 100;

/// One received audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP sequence number as received.
    pub sequence: u16,
    /// RTP timestamp as received.
    pub timestamp: u32,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

/// Counters kept by the [`JitterBuffer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer (excludes duplicates and late packets).
    pub received: u64,
    /// Sequence numbers skipped over when popping (never received in time).
    pub lost: u64,
    /// Packets dropped because they arrived after their slot was played out (or after the
    /// buffer overflowed, or as a suspected sequence restart that was not confirmed).
    pub late: u64,
    /// Packets dropped because the same sequence number was already buffered or played.
    pub duplicates: u64,
    /// Accepted packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
}

/// Reorders frames by (extended) RTP sequence number.
///
/// A frame is released by [`JitterBuffer::pop`] when it is the next expected sequence
/// number, or when more than `ceil(reorder_tolerance_ms / 20)` frames are waiting, in which
/// case the missing sequence numbers are skipped and counted as lost. The first frame
/// received is the first one expected.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    hold: usize,
    frames: BTreeMap<i64, Frame>,
    /// Highest raw (unwrapped, before `offset`) sequence number seen.
    highest_raw: Option<i64>,
    /// Added to raw extended sequence numbers; changes when the sender restarts numbering.
    offset: i64,
    last_popped: Option<i64>,
    /// Bit `i` set: extended sequence `last_popped - i` was delivered by `pop`.
    delivered: u64,
    probation: Option<u16>,
    stats: JitterStats,
    last_arrival: Option<(u32, f64)>,
    jitter_units: f64,
}

impl Default for JitterBuffer {
    /// A buffer with the default 50 ms reorder tolerance (3 frames).
    fn default() -> Self {
        JitterBuffer::new(50)
    }
}

impl JitterBuffer {
    /// Creates a buffer holding up to `ceil(reorder_tolerance_ms / 20)` frames while
    /// waiting for a missing one.
    pub fn new(reorder_tolerance_ms: u32) -> Self {
        let hold = (reorder_tolerance_ms.div_ceil(FRAME_MS) as usize).min(MAX_FRAMES / 2);
        JitterBuffer {
            hold,
            frames: BTreeMap::new(),
            highest_raw: None,
            offset: 0,
            last_popped: None,
            delivered: 0,
            probation: None,
            stats: JitterStats::default(),
            last_arrival: None,
            jitter_units: 0.0,
        }
    }

    /// Number of frames the buffer holds back while waiting for a missing one.
    pub fn hold_frames(&self) -> usize {
        self.hold
    }

    /// Number of frames currently buffered.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Adds a received frame.
    pub fn push(&mut self, sequence: u16, timestamp: u32, payload: Vec<u8>) {
        let raw = match self.highest_raw {
            None => {
                self.highest_raw = Some(sequence as i64);
                sequence as i64
            }
            Some(high) => {
                let delta = sequence.wrapping_sub(high as u16) as i16 as i64;
                if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
                    if self.probation == Some(sequence) {
                        // Two consecutive packets far away: the sender restarted its
                        // numbering. Continue the extended space right after what we had.
                        self.probation = None;
                        self.offset = high + self.offset + 1 - sequence as i64;
                        self.highest_raw = Some(sequence as i64);
                        sequence as i64
                    } else {
                        self.probation = Some(sequence.wrapping_add(1));
                        self.stats.late += 1;
                        return;
                    }
                } else {
                    self.probation = None;
                    high + delta
                }
            }
        };
        let ext = raw + self.offset;
        if let Some(last) = self.last_popped {
            if ext <= last {
                let age = last - ext;
                if age < 64 && self.delivered & (1u64 << age) != 0 {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.late += 1;
                }
                return;
            }
        }
        if self.frames.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        let high = self.highest_raw.unwrap_or(raw);
        if raw < high {
            self.stats.reordered += 1;
        } else {
            self.highest_raw = Some(raw);
        }
        self.frames.insert(
            ext,
            Frame {
                sequence,
                timestamp,
                payload,
            },
        );
        // Overflow: the oldest frame is discarded as if it had been played out late.
        if self.frames.len() > MAX_FRAMES && self.take_first().is_some() {
            self.stats.late += 1;
        }
    }

    /// Returns the next frame in sequence order, if it may be played now.
    pub fn pop(&mut self) -> Option<Frame> {
        let (&first, _) = self.frames.first_key_value()?;
        let ready = match self.last_popped {
            None => true,
            Some(last) => first == last + 1 || self.frames.len() > self.hold,
        };
        if ready {
            self.take_first()
        } else {
            None
        }
    }

    /// Returns every buffered frame in order (end of call), counting gaps as lost.
    pub fn drain(&mut self) -> Vec<Frame> {
        let mut out = Vec::with_capacity(self.frames.len());
        while let Some(frame) = self.take_first() {
            out.push(frame);
        }
        out
    }

    /// The counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Feeds the RFC 3550 interarrival jitter estimator with a packet's RTP timestamp and
    /// its arrival time in milliseconds (any monotonic origin).
    pub fn record_arrival(&mut self, timestamp: u32, arrival_ms: f64) {
        if !arrival_ms.is_finite() {
            return;
        }
        let units_per_ms = CLOCK_RATE as f64 / 1000.0;
        if let Some((prev_ts, prev_arrival)) = self.last_arrival {
            let ts_delta = timestamp.wrapping_sub(prev_ts) as i32 as f64;
            let d = (arrival_ms - prev_arrival) * units_per_ms - ts_delta;
            self.jitter_units += (d.abs() - self.jitter_units) / 16.0;
        }
        self.last_arrival = Some((timestamp, arrival_ms));
    }

    /// Current interarrival jitter estimate in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_units * 1000.0 / CLOCK_RATE as f64
    }

    fn take_first(&mut self) -> Option<Frame> {
        let (ext, frame) = self.frames.pop_first()?;
        match self.last_popped {
            Some(last) => {
                let step = ext - last;
                self.stats.lost += (step - 1).max(0) as u64;
                self.delivered = if step >= 64 {
                    0
                } else {
                    self.delivered << step
                };
                self.delivered |= 1;
            }
            None => self.delivered = 1,
        }
        self.last_popped = Some(ext);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(jb: &mut JitterBuffer, seq: u16) {
        jb.push(seq, seq as u32 * 160, vec![seq as u8]);
    }

    fn pop_all(jb: &mut JitterBuffer) -> Vec<u16> {
        std::iter::from_fn(|| jb.pop())
            .map(|f| f.sequence)
            .collect()
    }

    #[test]
    fn hold_from_tolerance() {
        assert_eq!(JitterBuffer::new(50).hold_frames(), 3);
        assert_eq!(JitterBuffer::default().hold_frames(), 3);
        assert_eq!(JitterBuffer::new(40).hold_frames(), 2);
        assert_eq!(JitterBuffer::new(0).hold_frames(), 0);
        assert_eq!(JitterBuffer::new(u32::MAX).hold_frames(), MAX_FRAMES / 2);
    }

    #[test]
    fn in_order_passthrough() {
        let mut jb = JitterBuffer::new(50);
        for seq in 1000..1100u16 {
            jb.push(seq, seq as u32 * 160, vec![1, 2, 3]);
            let f = jb.pop().expect("in-order frame is released at once");
            assert_eq!(f.sequence, seq);
            assert_eq!(f.timestamp, seq as u32 * 160);
            assert_eq!(f.payload, [1, 2, 3]);
            assert!(jb.pop().is_none());
        }
        let s = jb.stats();
        assert_eq!(
            (s.received, s.lost, s.late, s.duplicates, s.reordered),
            (100, 0, 0, 0, 0)
        );
    }

    #[test]
    fn swapped_packets_are_reordered() {
        let mut jb = JitterBuffer::new(50);
        push(&mut jb, 1);
        assert_eq!(pop_all(&mut jb), [1]);
        push(&mut jb, 3); // 2 is 20 ms behind
        assert_eq!(pop_all(&mut jb), [] as [u16; 0]);
        push(&mut jb, 4); // 40 ms
        assert_eq!(pop_all(&mut jb), [] as [u16; 0]);
        push(&mut jb, 2);
        assert_eq!(pop_all(&mut jb), [2, 3, 4]);
        let s = jb.stats();
        assert_eq!((s.received, s.lost, s.reordered), (4, 0, 1));
    }

    #[test]
    fn very_late_packet_dropped() {
        let mut jb = JitterBuffer::new(50);
        push(&mut jb, 9);
        assert_eq!(pop_all(&mut jb), [9]);
        let mut out = Vec::new();
        for seq in 11..=15 {
            push(&mut jb, seq);
            out.extend(pop_all(&mut jb));
        }
        assert_eq!(out, [11, 12, 13, 14, 15]);
        push(&mut jb, 10); // 100 ms late
        assert!(jb.pop().is_none());
        let s = jb.stats();
        assert_eq!((s.late, s.lost, s.received), (1, 1, 6));
    }

    #[test]
    fn gap_skip_counts_lost() {
        let mut jb = JitterBuffer::new(50);
        push(&mut jb, 1);
        assert_eq!(pop_all(&mut jb), [1]);
        for seq in 5..=7 {
            push(&mut jb, seq);
            assert!(jb.pop().is_none(), "holds up to 3 frames");
        }
        push(&mut jb, 8);
        assert_eq!(pop_all(&mut jb), [5, 6, 7, 8]);
        assert_eq!(jb.stats().lost, 3);
    }

    #[test]
    fn duplicates_dropped() {
        let mut jb = JitterBuffer::new(50);
        push(&mut jb, 1);
        push(&mut jb, 1); // duplicate while buffered
        assert_eq!(pop_all(&mut jb), [1]);
        push(&mut jb, 1); // duplicate of a played frame
        push(&mut jb, 2);
        push(&mut jb, 2);
        assert_eq!(pop_all(&mut jb), [2]);
        let s = jb.stats();
        assert_eq!((s.received, s.duplicates, s.late), (2, 3, 0));
    }

    #[test]
    fn sequence_wraparound() {
        let mut jb = JitterBuffer::new(50);
        let order = [65533u16, 65534, 0, 65535, 1, 2];
        let mut out = Vec::new();
        for seq in order {
            push(&mut jb, seq);
            out.extend(pop_all(&mut jb));
        }
        assert_eq!(out, [65533, 65534, 65535, 0, 1, 2]);
        let s = jb.stats();
        assert_eq!((s.received, s.lost, s.reordered, s.late), (6, 0, 1, 0));
        // A late packet from before the wrap is still recognised as late.
        push(&mut jb, 65530);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn drain_returns_rest_in_order() {
        let mut jb = JitterBuffer::new(100);
        for seq in [10u16, 14, 12, 11] {
            push(&mut jb, seq);
        }
        assert_eq!(pop_all(&mut jb), [10, 11, 12]);
        push(&mut jb, 16);
        let rest: Vec<u16> = jb.drain().into_iter().map(|f| f.sequence).collect();
        assert_eq!(rest, [14, 16]);
        assert!(jb.is_empty());
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn sender_restart_resyncs() {
        let mut jb = JitterBuffer::new(50);
        for seq in 100..105 {
            push(&mut jb, seq);
        }
        assert_eq!(pop_all(&mut jb), [100, 101, 102, 103, 104]);
        // Sequence jumps backwards by ~60000 (far outside the misorder window).
        let mut out = Vec::new();
        for seq in 40000..40010 {
            push(&mut jb, seq);
            out.extend(pop_all(&mut jb));
        }
        assert_eq!(out, (40001..40010).collect::<Vec<_>>());
        assert_eq!(
            jb.stats().late,
            1,
            "the first packet of the restart is on probation"
        );
    }

    #[test]
    fn jitter_estimate() {
        let mut jb = JitterBuffer::new(50);
        for i in 0..100u32 {
            jb.record_arrival(i * 160, 1000.0 + i as f64 * 20.0);
        }
        assert!(jb.jitter_ms() < 1e-9);
        for i in 100..1100u32 {
            let wobble = if i % 2 == 0 { 5.0 } else { 0.0 };
            jb.record_arrival(i * 160, 1000.0 + i as f64 * 20.0 + wobble);
        }
        assert!((jb.jitter_ms() - 5.0).abs() < 0.5, "{}", jb.jitter_ms());
        // Timestamp wrap does not produce a spike.
        let mut jb = JitterBuffer::new(50);
        for i in 0..10u32 {
            jb.record_arrival((u32::MAX - 800).wrapping_add(i * 160), i as f64 * 20.0);
        }
        jb.record_arrival(0, f64::NAN);
        assert!(jb.jitter_ms() < 1e-9);
    }

    #[test]
    fn random_input_is_bounded_and_never_panics() {
        let mut jb = JitterBuffer::new(60);
        let mut state = 99u32;
        let mut popped = 0u64;
        for _ in 0..50_000 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let seq = (state >> 16) as u16;
            jb.push(seq, state, Vec::new());
            if state & 3 == 0 {
                popped += pop_all(&mut jb).len() as u64;
            }
            assert!(jb.len() <= MAX_FRAMES);
        }
        popped += jb.drain().len() as u64;
        assert!(popped <= jb.stats().received);
    }
}
