//! Two-channel call recording (left = sent, right = received) and a correlation helper.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec, WavWriter};

use crate::rtp::CLOCK_RATE;
use crate::MediaError;

/// If one direction runs this far ahead of the other (60 s of audio), the lagging side is
/// filled with silence so memory stays bounded.
const MAX_SKEW: usize = 60 * CLOCK_RATE as usize;

/// Largest lag searched by [`correlate`], in samples.
const MAX_LAG: usize = 4000;
/// Only this many leading samples of each signal are compared by [`correlate`].
const MAX_CORRELATE: usize = 16000;

/// Summary of a finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingInfo {
    /// The WAV file written.
    pub path: PathBuf,
    /// Samples per channel.
    pub samples: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// Records a call as a 2-channel 16-bit 8 kHz WAV: left is what we sent, right is what we
/// received.
///
/// Each direction has its own sample cursor: the n-th sample pushed with
/// [`CallRecorder::push_tx`] and the n-th sample pushed with [`CallRecorder::push_rx`] form
/// frame n. Frames are written once both sides have data; at [`CallRecorder::finish`] the
/// shorter side is padded with silence.
pub struct CallRecorder {
    writer: WavWriter<BufWriter<File>>,
    path: PathBuf,
    tx: VecDeque<i16>,
    rx: VecDeque<i16>,
    frames: u64,
    /// First write error hit while pushing; reported by `finish`.
    deferred_error: Option<MediaError>,
}

impl std::fmt::Debug for CallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecorder")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .field("pending_tx", &self.tx.len())
            .field("pending_rx", &self.rx.len())
            .field("deferred_error", &self.deferred_error)
            .finish()
    }
}

impl CallRecorder {
    /// Creates (truncates) the WAV file at `path`.
    pub fn create(path: &Path) -> Result<Self, MediaError> {
        let spec = WavSpec {
            channels: 2,
            sample_rate: CLOCK_RATE,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let writer = WavWriter::new(BufWriter::new(File::create(path)?), spec)?;
        Ok(CallRecorder {
            writer,
            path: path.to_path_buf(),
            tx: VecDeque::new(),
            rx: VecDeque::new(),
            frames: 0,
            deferred_error: None,
        })
    }

    /// Appends audio we sent (left channel).
    pub fn push_tx(&mut self, samples: &[i16]) {
        self.tx.extend(samples);
        self.flush_ready();
    }

    /// Appends audio we received (right channel).
    pub fn push_rx(&mut self, samples: &[i16]) {
        self.rx.extend(samples);
        self.flush_ready();
    }

    /// Samples per channel recorded so far (including frames still buffered).
    pub fn samples(&self) -> u64 {
        self.frames + self.tx.len().max(self.rx.len()) as u64
    }

    /// Pads the shorter side with silence, finalizes the file and reports what was written.
    pub fn finish(mut self) -> Result<RecordingInfo, MediaError> {
        if let Some(err) = self.deferred_error.take() {
            return Err(err);
        }
        let pending = self.tx.len().max(self.rx.len());
        self.write_frames(pending)?;
        let samples = self.frames;
        let path = self.path.clone();
        self.writer.finalize()?;
        Ok(RecordingInfo {
            path,
            samples,
            duration_ms: samples * 1000 / CLOCK_RATE as u64,
        })
    }

    /// Writes every frame both sides have, plus silence-padded frames beyond `MAX_SKEW`.
    /// A write error is kept and reported by `finish`; later audio is then discarded.
    fn flush_ready(&mut self) {
        if self.deferred_error.is_some() {
            self.tx.clear();
            self.rx.clear();
            return;
        }
        let both = self.tx.len().min(self.rx.len());
        let skew = self.tx.len().max(self.rx.len()) - both;
        let n = both + skew.saturating_sub(MAX_SKEW);
        if n > 0 {
            if let Err(err) = self.write_frames(n) {
                self.deferred_error = Some(err);
            }
        }
    }

    fn write_frames(&mut self, n: usize) -> Result<(), MediaError> {
        for _ in 0..n {
            let l = self.tx.pop_front().unwrap_or(0);
            let r = self.rx.pop_front().unwrap_or(0);
            self.writer.write_sample(l)?;
            self.writer.write_sample(r)?;
            self.frames += 1;
        }
        Ok(())
    }
}

/// Normalized cross-correlation of `a` and `b` at the best lag within ±4000 samples,
/// computed on (at most) the first 16000 samples of each. For each lag the dot product of
/// the overlapping parts is divided by the geometric mean of their energies, so the result
/// is in [-1, 1]; 1 means `b` is a scaled, shifted copy of (part of) `a`. Lags whose overlap
/// is shorter than half of the shorter signal are ignored. Returns 0.0 when nothing can be
/// compared (empty or silent input).
pub fn correlate(a: &[i16], b: &[i16]) -> f64 {
    let a: Vec<f64> = a.iter().take(MAX_CORRELATE).map(|&x| x as f64).collect();
    let b: Vec<f64> = b.iter().take(MAX_CORRELATE).map(|&x| x as f64).collect();
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let prefix = |s: &[f64]| {
        let mut p = Vec::with_capacity(s.len() + 1);
        p.push(0.0);
        let mut acc = 0.0;
        for x in s {
            acc += x * x;
            p.push(acc);
        }
        p
    };
    let (pa, pb) = (prefix(&a), prefix(&b));
    let min_overlap = (a.len().min(b.len()) / 2).max(1);
    let mut best = 0.0f64;
    let max_lag = MAX_LAG as i64;
    for lag in -max_lag..=max_lag {
        // Pair a[i + lag] with b[i].
        let b_start = (-lag).max(0) as usize;
        let a_start = lag.max(0) as usize;
        if a_start >= a.len() || b_start >= b.len() {
            continue;
        }
        let len = (a.len() - a_start).min(b.len() - b_start);
        if len < min_overlap {
            continue;
        }
        let ea = pa[a_start + len] - pa[a_start];
        let eb = pb[b_start + len] - pb[b_start];
        if ea <= 0.0 || eb <= 0.0 {
            continue;
        }
        let dot: f64 = a[a_start..a_start + len]
            .iter()
            .zip(&b[b_start..b_start + len])
            .map(|(x, y)| x * y)
            .sum();
        let c = dot / (ea * eb).sqrt();
        if c > best {
            best = c;
        }
    }
    best.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{lcg_noise, sine, TempPath};

    fn read_stereo(path: &Path) -> (Vec<i16>, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        let spec = r.spec();
        assert_eq!(spec.channels, 2);
        assert_eq!(spec.sample_rate, 8000);
        assert_eq!(spec.bits_per_sample, 16);
        let all: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        let left = all.iter().step_by(2).copied().collect();
        let right = all.iter().skip(1).step_by(2).copied().collect();
        (left, right)
    }

    #[test]
    fn channels_come_back_aligned() {
        let tmp = TempPath::new("rec.wav");
        let tx: Vec<i16> = (0..1600).map(|i| i as i16).collect();
        let rx: Vec<i16> = (0..1600).map(|i| -(i as i16)).collect();
        let mut rec = CallRecorder::create(&tmp.0).unwrap();
        // Uneven chunking per direction.
        for chunk in tx.chunks(160) {
            rec.push_tx(chunk);
        }
        for chunk in rx.chunks(100) {
            rec.push_rx(chunk);
        }
        assert_eq!(rec.samples(), 1600);
        let info = rec.finish().unwrap();
        assert_eq!(
            info,
            RecordingInfo {
                path: tmp.0.clone(),
                samples: 1600,
                duration_ms: 200
            }
        );
        let (left, right) = read_stereo(&tmp.0);
        assert_eq!(left, tx);
        assert_eq!(right, rx);
    }

    #[test]
    fn shorter_side_padded() {
        let tmp = TempPath::new("pad.wav");
        let mut rec = CallRecorder::create(&tmp.0).unwrap();
        rec.push_tx(&[1000; 800]);
        rec.push_rx(&[-5; 300]);
        rec.push_tx(&[2000; 80]);
        let info = rec.finish().unwrap();
        assert_eq!(info.samples, 880);
        assert_eq!(info.duration_ms, 110);
        let (left, right) = read_stereo(&tmp.0);
        assert_eq!(left.len(), 880);
        assert_eq!(&left[..800], &[1000; 800][..]);
        assert_eq!(&left[800..], &[2000; 80][..]);
        assert_eq!(&right[..300], &[-5; 300][..]);
        assert!(right[300..].iter().all(|&x| x == 0));
        // Only the received side.
        let tmp2 = TempPath::new("rx_only.wav");
        let mut rec = CallRecorder::create(&tmp2.0).unwrap();
        rec.push_rx(&[7; 160]);
        assert_eq!(rec.finish().unwrap().samples, 160);
        let (left, right) = read_stereo(&tmp2.0);
        assert_eq!((left, right), (vec![0; 160], vec![7; 160]));
    }

    #[test]
    fn empty_recording_is_valid() {
        let tmp = TempPath::new("empty.wav");
        let info = CallRecorder::create(&tmp.0).unwrap().finish().unwrap();
        assert_eq!((info.samples, info.duration_ms), (0, 0));
        assert_eq!(read_stereo(&tmp.0), (vec![], vec![]));
    }

    #[test]
    fn skew_is_bounded() {
        let tmp = TempPath::new("skew.wav");
        let mut rec = CallRecorder::create(&tmp.0).unwrap();
        for _ in 0..(MAX_SKEW / 160 + 10) {
            rec.push_tx(&[1; 160]);
        }
        assert!(rec.tx.len() <= MAX_SKEW);
        assert_eq!(
            rec.finish().unwrap().samples as usize,
            (MAX_SKEW / 160 + 10) * 160
        );
    }

    #[test]
    fn create_fails_for_bad_path() {
        assert!(CallRecorder::create(Path::new("/nonexistent/dir/rec.wav")).is_err());
    }

    #[test]
    fn correlation_finds_shifted_copy() {
        let x: Vec<i16> = lcg_noise(8000, 8000, 42)
            .iter()
            .zip(sine(300.0, 4000.0, 8000.0, 8000))
            .map(|(a, b)| a / 2 + b)
            .collect();
        let mut shifted = vec![0i16; 800];
        shifted.extend_from_slice(&x);
        assert!(correlate(&shifted, &x) > 0.9);
        assert!(correlate(&x, &shifted) > 0.9);
        assert!((correlate(&x, &x) - 1.0).abs() < 1e-9);
        // A recording containing the prompt on one channel after a delay.
        let mut recording = lcg_noise(2400, 300, 9);
        recording.extend(&x[..6000]);
        assert!(correlate(&recording, &x[..6000]) > 0.9);
    }

    #[test]
    fn correlation_rejects_unrelated_signals() {
        let s = sine(440.0, 10000.0, 8000.0, 8000);
        let noise = lcg_noise(8000, 10000, 7);
        let c = correlate(&s, &noise);
        assert!(c < 0.3, "{c}");
        assert_eq!(correlate(&[], &s), 0.0);
        assert_eq!(correlate(&[0; 100], &s), 0.0);
    }
}
