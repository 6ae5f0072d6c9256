//! DTMF: RFC 4733 telephone-events and in-band Goertzel detection/generation.

use crate::MediaError;

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`, others are not digits).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of an RTP payload; extra bytes are ignored.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, MediaError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(MediaError::EventTooShort(payload.len())),
        }
    }

    /// Serializes the event (the reserved R bit is zero, volume is masked to 6 bits).
    pub fn to_bytes(&self) -> [u8; 4] {
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3F);
        let d = self.duration.to_be_bytes();
        [self.event, flags, d[0], d[1]]
    }
}

/// Maps an RFC 4733 event code to its DTMF digit.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// Maps a DTMF digit (`0-9 * # A-D`, lowercase accepted) to its RFC 4733 event code.
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// Number of recent event timestamps remembered, so a stray retransmission of an earlier
/// event does not produce its digit again.
const RECENT_EVENTS: usize = 8;

/// Turns the redundant packet stream of RFC 4733 into one digit per event.
///
/// All packets of one event share its RTP timestamp; the digit is emitted on the first
/// packet seen for a new timestamp (start, update or end packet alike) and never again for
/// that timestamp.
#[derive(Debug, Clone, Default)]
pub struct Rfc4733Collector {
    recent: [Option<u32>; RECENT_EVENTS],
    next: usize,
}

impl Rfc4733Collector {
    /// Creates an empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Processes one telephone-event packet; returns the digit if it starts a new event.
    pub fn on_packet(&mut self, rtp_timestamp: u32, ev: &TelephoneEvent) -> Option<char> {
        if self.recent.contains(&Some(rtp_timestamp)) {
            return None;
        }
        self.recent[self.next] = Some(rtp_timestamp);
        self.next = (self.next + 1) % RECENT_EVENTS;
        event_to_digit(ev.event)
    }
}

const SAMPLE_RATE: f32 = 8000.0;
/// Goertzel block length (the classic 205 samples at 8 kHz, ~25.6 ms).
const BLOCK: usize = 205;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Minimum amplitude of each of the two tones (about -36 dBm0).
const MIN_TONE_AMPLITUDE: f32 = 400.0;
/// The two tones must carry at least this share of the block energy.
const MIN_TONE_SHARE: f32 = 0.6;
/// The strongest row/column must beat every other one of its group by this ratio (6 dB).
const DOMINANCE: f32 = 4.0;
/// Row may exceed column by 8 dB ("normal twist").
const NORMAL_TWIST: f32 = 6.3;
/// Column may exceed row by 4 dB ("reverse twist").
const REVERSE_TWIST: f32 = 2.5;
/// Consecutive blocks a digit must be seen before it is reported.
const STABLE_BLOCKS: u32 = 2;

/// In-band DTMF detector for 8 kHz linear PCM using the Goertzel algorithm on 205-sample
/// blocks. A digit is reported once, after it has been seen in two consecutive blocks; a
/// block without a digit must pass before the same digit can be reported again.
#[derive(Debug, Clone)]
pub struct GoertzelDetector {
    coeffs: [f32; 8],
    block: Vec<f32>,
    last_candidate: Option<char>,
    stable: u32,
    reported: Option<char>,
}

impl Default for GoertzelDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl GoertzelDetector {
    /// Creates a detector.
    pub fn new() -> Self {
        let mut coeffs = [0.0; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            *c = 2.0 * (2.0 * std::f32::consts::PI * f / SAMPLE_RATE).cos();
        }
        GoertzelDetector {
            coeffs,
            block: Vec::with_capacity(BLOCK),
            last_candidate: None,
            stable: 0,
            reported: None,
        }
    }

    /// Feeds samples (any chunk size) and returns the digits detected in them.
    pub fn feed(&mut self, samples: &[i16]) -> Vec<char> {
        let mut digits = Vec::new();
        for &s in samples {
            self.block.push(s as f32);
            if self.block.len() == BLOCK {
                let candidate = self.analyze_block();
                self.block.clear();
                if let Some(d) = self.update_state(candidate) {
                    digits.push(d);
                }
            }
        }
        digits
    }

    /// Clears all state (partial block and digit tracking).
    pub fn reset(&mut self) {
        self.block.clear();
        self.last_candidate = None;
        self.stable = 0;
        self.reported = None;
    }

    fn update_state(&mut self, candidate: Option<char>) -> Option<char> {
        if candidate == self.last_candidate {
            self.stable = self.stable.saturating_add(1);
        } else {
            self.last_candidate = candidate;
            self.stable = 1;
        }
        match candidate {
            None => {
                self.reported = None;
                None
            }
            Some(d) if self.stable >= STABLE_BLOCKS && self.reported != Some(d) => {
                self.reported = Some(d);
                Some(d)
            }
            Some(_) => None,
        }
    }

    /// Returns the digit present in the current block, if any.
    fn analyze_block(&self) -> Option<char> {
        let mut energy = [0.0f32; 8];
        for (e, &coeff) in energy.iter_mut().zip(self.coeffs.iter()) {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for &x in &self.block {
                let s0 = x + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            // Scale the Goertzel power to the energy of the tone component in the block.
            *e = (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / BLOCK as f32;
        }
        let total: f32 = self.block.iter().map(|x| x * x).sum();
        let (rows, cols) = energy.split_at(4);
        let (row, row_e) = strongest(rows)?;
        let (col, col_e) = strongest(cols)?;

        let min_energy = MIN_TONE_AMPLITUDE * MIN_TONE_AMPLITUDE * BLOCK as f32 / 2.0;
        if row_e < min_energy || col_e < min_energy {
            return None;
        }
        if col_e > row_e * REVERSE_TWIST || row_e > col_e * NORMAL_TWIST {
            return None;
        }
        let dominant = |group: &[f32], best: usize, best_e: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &e)| i == best || e * DOMINANCE <= best_e)
        };
        if !dominant(rows, row, row_e) || !dominant(cols, col, col_e) {
            return None;
        }
        if row_e + col_e < MIN_TONE_SHARE * total {
            return None;
        }
        Some(KEYPAD[row][col])
    }
}

fn strongest(group: &[f32]) -> Option<(usize, f32)> {
    group
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Generates `duration_ms` of the DTMF tone pair for `digit` at 8 kHz. Each of the two tones
/// has amplitude `amplitude / 2`, so the sum never exceeds `amplitude`; the edges are ramped
/// over 2 ms to avoid clicks. Returns an empty vector for a character that is not a digit.
pub fn generate_dtmf(digit: char, duration_ms: u32, amplitude: i16) -> Vec<i16> {
    let Some(event) = digit_to_event(digit) else {
        return Vec::new();
    };
    let (row, col) = match event {
        0 => (3, 1),
        1..=9 => ((event as usize - 1) / 3, (event as usize - 1) % 3),
        10 => (3, 0),
        11 => (3, 2),
        _ => (event as usize - 12, 3),
    };
    let n = (duration_ms as u64 * 8) as usize;
    let amp = (amplitude as f64).abs() / 2.0;
    let ramp = 16usize.min(n / 2);
    let (fr, fc) = (ROWS[row] as f64, COLS[col] as f64);
    let w = 2.0 * std::f64::consts::PI / SAMPLE_RATE as f64;
    (0..n)
        .map(|i| {
            let t = i as f64;
            let edge = i.min(n - 1 - i);
            let gain = if edge < ramp {
                edge as f64 / ramp as f64
            } else {
                1.0
            };
            let v = amp * gain * ((w * fr * t).sin() + (w * fc * t).sin());
            v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{lcg_noise, sine};

    const ALL: &str = "0123456789*#ABCD";

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    fn detect(samples: &[i16]) -> String {
        GoertzelDetector::new().feed(samples).into_iter().collect()
    }

    #[test]
    fn event_round_trip() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        let bytes = ev.to_bytes();
        assert_eq!(bytes, [11, 0x8A, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&bytes).unwrap(), ev);
        // R bit is ignored, extra bytes tolerated.
        let parsed = TelephoneEvent::parse(&[5, 0x4F, 0, 160, 99]).unwrap();
        assert_eq!(
            parsed,
            TelephoneEvent {
                event: 5,
                end: false,
                volume: 15,
                duration: 160
            }
        );
        for len in 0..4 {
            assert!(matches!(
                TelephoneEvent::parse(&[0u8; 4][..len]),
                Err(MediaError::EventTooShort(l)) if l == len
            ));
        }
    }

    #[test]
    fn digit_mapping() {
        let digits: String = (0..16).map(|e| event_to_digit(e).unwrap()).collect();
        assert_eq!(digits, ALL);
        assert_eq!(event_to_digit(16), None);
        assert_eq!(event_to_digit(255), None);
        for (i, c) in ALL.chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('x'), None);
    }

    #[test]
    fn collector_dedups_redundant_packets() {
        let mut c = Rfc4733Collector::new();
        let ev = |event, end, duration| TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        };
        let mut got = Vec::new();
        let packets = [
            (1000, ev(1, false, 160)),
            (1000, ev(1, false, 320)),
            (1000, ev(1, false, 480)),
            (1000, ev(1, true, 640)),
            (1000, ev(1, true, 640)),
            (1000, ev(1, true, 640)),
            (2600, ev(1, false, 160)), // same digit pressed again: new event
            (2600, ev(1, true, 320)),
            (4000, ev(11, true, 800)), // start lost, only end packets seen
            (4000, ev(11, true, 800)),
            (2600, ev(1, true, 320)),   // stray late retransmission
            (5000, ev(16, false, 160)), // flash: not a digit
            (5000, ev(16, true, 320)),
        ];
        for (ts, e) in packets {
            got.extend(c.on_packet(ts, &e));
        }
        assert_eq!(got, ['1', '1', '#']);
    }

    #[test]
    fn every_digit_detected_once() {
        for digit in ALL.chars() {
            let mut s = generate_dtmf(digit, 100, 16000);
            s.extend(silence(50));
            assert_eq!(detect(&s), digit.to_string(), "digit {digit}");
        }
    }

    #[test]
    fn digit_sequence_detected() {
        let mut s = silence(30);
        for d in ALL.chars() {
            s.extend(generate_dtmf(d, 70, 12000));
            s.extend(silence(60));
        }
        assert_eq!(detect(&s), ALL);
        // Same result whatever the chunking.
        let mut det = GoertzelDetector::new();
        let chunked: String = s.chunks(37).flat_map(|c| det.feed(c)).collect();
        assert_eq!(chunked, ALL);
    }

    #[test]
    fn repeated_digit_needs_release() {
        let mut s = Vec::new();
        for _ in 0..2 {
            s.extend(generate_dtmf('1', 100, 16000));
            s.extend(silence(50));
        }
        s.extend(generate_dtmf('2', 100, 16000));
        s.extend(silence(50));
        s.extend(generate_dtmf('1', 100, 16000));
        assert_eq!(detect(&s), "1121");
        // A long press is a single digit.
        assert_eq!(detect(&generate_dtmf('5', 2000, 16000)), "5");
    }

    #[test]
    fn one_two_one_with_short_gaps() {
        let mut s = Vec::new();
        for (i, d) in ['1', '2', '1'].into_iter().enumerate() {
            if i > 0 {
                s.extend(silence(50));
            }
            s.extend(generate_dtmf(d, 80, 10000));
        }
        assert_eq!(detect(&s), "121");
    }

    #[test]
    fn detection_survives_noise_and_twist() {
        let mut s = generate_dtmf('7', 120, 12000);
        // Add a little noise (about 20 dB below the tones).
        for (x, n) in s.iter_mut().zip(lcg_noise(960, 600, 3)) {
            *x = x.saturating_add(n);
        }
        assert_eq!(detect(&s), "7");
        // 3 dB of twist: column weaker than row.
        let mut s = sine(852.0, 6000.0, 8000.0, 960);
        for (x, c) in s.iter_mut().zip(sine(1477.0, 4250.0, 8000.0, 960)) {
            *x += c;
        }
        assert_eq!(detect(&s), "9");
        // Through a G.711 round trip, at a low level (about -30 dBm0 per tone).
        for codec in [crate::Codec::Pcmu, crate::Codec::Pcma] {
            let mut enc = Vec::new();
            codec.encode(&generate_dtmf('D', 80, 2000), &mut enc);
            let mut dec = Vec::new();
            codec.decode(&enc, &mut dec);
            assert_eq!(detect(&dec), "D", "{codec:?}");
        }
    }

    #[test]
    fn non_dtmf_audio_rejected() {
        assert_eq!(detect(&sine(440.0, 16000.0, 8000.0, 16000)), "");
        assert_eq!(detect(&lcg_noise(16000, 16000, 12345)), "");
        assert_eq!(detect(&lcg_noise(16000, 3000, 777)), "");
        // A single DTMF frequency alone is not a digit.
        assert_eq!(detect(&sine(697.0, 12000.0, 8000.0, 4000)), "");
        // Too quiet.
        assert_eq!(detect(&generate_dtmf('5', 200, 300)), "");
        // Strong twist (row 12 dB above column).
        let mut s = sine(770.0, 8000.0, 8000.0, 2000);
        for (x, c) in s.iter_mut().zip(sine(1336.0, 2000.0, 8000.0, 2000)) {
            *x += c;
        }
        assert_eq!(detect(&s), "");
    }

    #[test]
    fn speech_like_audio_rejected() {
        // Harmonic-rich "voiced" signal with a gliding pitch and formant-like weighting,
        // including pitches whose harmonics land close to DTMF frequencies.
        for f0_start in [100.0f64, 120.0, 150.0, 174.0, 233.0] {
            let mut phase = vec![0.0f64; 30];
            let n = 16000;
            let s: Vec<i16> = (0..n)
                .map(|i| {
                    let t = i as f64 / 8000.0;
                    let f0 = f0_start * (1.0 + 0.1 * (2.0 * std::f64::consts::PI * 3.0 * t).sin());
                    let mut v = 0.0;
                    for (h, ph) in phase.iter_mut().enumerate() {
                        let f = f0 * (h + 1) as f64;
                        if f >= 3800.0 {
                            break;
                        }
                        *ph += 2.0 * std::f64::consts::PI * f / 8000.0;
                        let formant = (-((f - 700.0) / 300.0).powi(2)).exp()
                            + 0.6 * (-((f - 1250.0) / 300.0).powi(2)).exp()
                            + 0.1;
                        v += formant * ph.sin();
                    }
                    (v * 3000.0).clamp(-32768.0, 32767.0) as i16
                })
                .collect();
            assert_eq!(detect(&s), "", "f0 {f0_start}");
        }
        // Two steady tones off the DTMF grid (e.g. a dial tone 350 + 440 Hz, busy 480 + 620).
        for (a, b) in [(350.0, 440.0), (480.0, 620.0), (1000.0, 1100.0)] {
            let mut s = sine(a, 8000.0, 8000.0, 8000);
            for (x, c) in s.iter_mut().zip(sine(b, 8000.0, 8000.0, 8000)) {
                *x += c;
            }
            assert_eq!(detect(&s), "", "{a}+{b}");
        }
    }

    #[test]
    fn generator_properties() {
        let s = generate_dtmf('#', 50, 20000);
        assert_eq!(s.len(), 400);
        assert!(s.iter().all(|&x| (x as i32).abs() <= 20000));
        assert_eq!(s[0], 0);
        assert!(generate_dtmf('x', 50, 20000).is_empty());
        assert!(generate_dtmf('1', 0, 20000).is_empty());
        assert_eq!(generate_dtmf('1', 1, i16::MIN).len(), 8);
    }
}
