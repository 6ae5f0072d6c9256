//! WAV prompt loading (any PCM/float WAV converted to 8 kHz mono) and writing.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};

use crate::rtp::CLOCK_RATE;
use crate::MediaError;

/// Output rate of [`load_prompt`].
const TARGET_RATE: u32 = CLOCK_RATE;
/// Zero crossings of the windowed-sinc kernel on each side of its centre.
const SINC_ZERO_CROSSINGS: f64 = 8.0;
/// Passband edge as a fraction of the lower Nyquist frequency.
const CUTOFF_FRACTION: f64 = 0.9;
/// Accepted input sample rates (bounds the resampler's cost and output size).
const MIN_RATE: u32 = 1000;
const MAX_RATE: u32 = 768_000;
/// Largest per-phase kernel table we precompute (in taps).
const MAX_TABLE_TAPS: usize = 1 << 21;

/// Loads a WAV prompt and converts it to 8 kHz mono `i16`.
///
/// Accepts integer PCM of 1 to 32 bits and 32-bit float, any channel count (downmixed by
/// averaging) and any sample rate (resampled with a Hann-windowed sinc filter whose cutoff
/// sits below the lower of the two Nyquist frequencies, so downsampling does not alias).
pub fn load_prompt(path: &Path) -> Result<Vec<i16>, MediaError> {
    load_prompt_from_reader(BufReader::new(File::open(path)?))
}

/// Same as [`load_prompt`] for any reader producing a WAV file.
pub fn load_prompt_from_reader<R: Read>(reader: R) -> Result<Vec<i16>, MediaError> {
    let reader = WavReader::new(reader)?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err(MediaError::UnsupportedWav("zero channels".into()));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(MediaError::UnsupportedWav(format!(
            "sample rate {} hz outside {MIN_RATE}..={MAX_RATE}",
            spec.sample_rate
        )));
    }
    let mono = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            downmix(
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale)),
                channels,
            )?
        }
        (SampleFormat::Float, 32) => downmix(reader.into_samples::<f32>(), channels)?,
        (format, bits) => {
            return Err(MediaError::UnsupportedWav(format!(
                "{bits}-bit {format:?} samples"
            )))
        }
    };
    let resampled = resample(&mono, spec.sample_rate, TARGET_RATE);
    Ok(resampled.into_iter().map(to_i16).collect())
}

/// Writes 8 kHz mono 16-bit PCM.
pub fn write_wav_mono_8k(path: &Path, samples: &[i16]) -> Result<(), MediaError> {
    let spec = WavSpec {
        channels: 1,
        sample_rate: TARGET_RATE,
        bits_per_sample: 16,
        sample_format: SampleFormat::Int,
    };
    let mut writer = WavWriter::create(path, spec)?;
    for &s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(())
}

fn to_i16(x: f32) -> i16 {
    if x.is_nan() {
        return 0;
    }
    (x * 32768.0)
        .round()
        .clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// Averages interleaved frames into mono; a trailing partial frame is dropped.
fn downmix<I>(samples: I, channels: usize) -> Result<Vec<f32>, MediaError>
where
    I: Iterator<Item = Result<f32, hound::Error>>,
{
    let mut out = Vec::new();
    let mut acc = 0.0f32;
    let mut n = 0;
    for s in samples {
        let v = s?;
        acc += if v.is_finite() {
            v.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        n += 1;
        if n == channels {
            out.push(acc / channels as f32);
            acc = 0.0;
            n = 0;
        }
    }
    Ok(out)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Band-limited resampling with a Hann-windowed sinc kernel, normalised to unity DC gain.
fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let g = gcd(from as u64, to as u64);
    let (step, phases) = (from as u64 / g, to as u64 / g); // input advance = step / phases
    let out_len = (input.len() as u64 * to as u64 / from as u64) as usize;
    // Cutoff in cycles per input sample: below the Nyquist frequency of the slower rate.
    let cutoff = 0.5 * CUTOFF_FRACTION * (to as f64 / from as f64).min(1.0);
    let half_width = (SINC_ZERO_CROSSINGS / (2.0 * cutoff)).ceil() as usize;
    let taps = 2 * half_width;

    // Weights for taps at input offsets (1 - half_width ..= half_width) from floor(centre),
    // for a centre at fractional position `frac` past that floor.
    let kernel = |frac: f64, weights: &mut Vec<f32>| {
        weights.clear();
        let mut sum = 0.0;
        for j in 0..taps {
            let d = (j as f64 + 1.0 - half_width as f64) - frac;
            let x = d / half_width as f64;
            let w = if x.abs() >= 1.0 {
                0.0
            } else {
                let arg = 2.0 * cutoff * d;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
                };
                sinc * (0.5 + 0.5 * (std::f64::consts::PI * x).cos())
            };
            sum += w;
            weights.push(w as f32);
        }
        if sum.abs() > 1e-12 {
            for w in weights.iter_mut() {
                *w /= sum as f32;
            }
        }
    };
    let table: Option<Vec<Vec<f32>>> = ((phases as usize).saturating_mul(taps) <= MAX_TABLE_TAPS)
        .then(|| {
            (0..phases)
                .map(|p| {
                    let mut w = Vec::with_capacity(taps);
                    kernel(p as f64 / phases as f64, &mut w);
                    w
                })
                .collect()
        });

    let mut scratch = Vec::with_capacity(taps);
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let pos = n * step;
        let (base, phase) = ((pos / phases) as i64, pos % phases);
        let weights: &[f32] = match &table {
            Some(t) => &t[phase as usize],
            None => {
                kernel(phase as f64 / phases as f64, &mut scratch);
                &scratch
            }
        };
        let first = base + 1 - half_width as i64;
        let mut acc = 0.0f32;
        let mut wsum = 0.0f32;
        for (j, &w) in weights.iter().enumerate() {
            let k = first + j as i64;
            if k >= 0 && (k as usize) < input.len() {
                acc += w * input[k as usize];
                wsum += w;
            }
        }
        // Near the edges part of the kernel falls outside the signal: renormalise.
        out.push(if wsum > 0.25 { acc / wsum } else { acc });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{sine, TempPath};

    fn zero_crossings(s: &[i16]) -> usize {
        s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    fn write_spec<F: FnMut(&mut WavWriter<std::io::BufWriter<File>>, usize)>(
        path: &Path,
        spec: WavSpec,
        frames: usize,
        mut write_frame: F,
    ) {
        let mut w = WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            write_frame(&mut w, i);
        }
        w.finalize().unwrap();
    }

    fn spec(channels: u16, rate: u32, bits: u16, format: SampleFormat) -> WavSpec {
        WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: format,
        }
    }

    #[test]
    fn stereo_16k_halves_and_keeps_frequency() {
        let tmp = TempPath::new("stereo16k.wav");
        let tone = sine(1000.0, 12000.0, 16000.0, 16000);
        write_spec(
            &tmp.0,
            spec(2, 16000, 16, SampleFormat::Int),
            16000,
            |w, i| {
                w.write_sample(tone[i]).unwrap();
                w.write_sample(tone[i]).unwrap();
            },
        );
        let out = load_prompt(&tmp.0).unwrap();
        assert_eq!(out.len(), 8000);
        let zc = zero_crossings(&out);
        assert!((1990..=2010).contains(&zc), "zero crossings {zc}");
        let level = rms(&out[100..7900]);
        assert!((level - 12000.0 / 2f64.sqrt()).abs() < 300.0, "rms {level}");
    }

    #[test]
    fn mono_8k_passes_through_unchanged() {
        let tmp = TempPath::new("mono8k.wav");
        let samples: Vec<i16> = (0..4000)
            .map(|i| ((i * 7919) % 65536 - 32768) as i16)
            .collect();
        write_wav_mono_8k(&tmp.0, &samples).unwrap();
        assert_eq!(load_prompt(&tmp.0).unwrap(), samples);
        let bytes = std::fs::read(&tmp.0).unwrap();
        assert_eq!(load_prompt_from_reader(&bytes[..]).unwrap(), samples);
    }

    #[test]
    fn downmix_averages_channels() {
        let tmp = TempPath::new("downmix.wav");
        write_spec(&tmp.0, spec(3, 8000, 16, SampleFormat::Int), 10, |w, _| {
            for v in [3000i16, -1000, 1000] {
                w.write_sample(v).unwrap();
            }
        });
        assert_eq!(load_prompt(&tmp.0).unwrap(), vec![1000; 10]);
    }

    #[test]
    fn other_formats_and_rates() {
        let cases: [(u32, u16, SampleFormat); 6] = [
            (44100, 16, SampleFormat::Int),
            (48000, 32, SampleFormat::Float),
            (22050, 24, SampleFormat::Int),
            (11025, 8, SampleFormat::Int),
            (6000, 32, SampleFormat::Int),
            (96000, 16, SampleFormat::Int),
        ];
        for (rate, bits, format) in cases {
            let tmp = TempPath::new("formats.wav");
            let frames = rate as usize / 2;
            write_spec(&tmp.0, spec(1, rate, bits, format), frames, |w, i| {
                let v = 0.5 * (2.0 * std::f64::consts::PI * 500.0 * i as f64 / rate as f64).sin();
                match (format, bits) {
                    (SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                    (_, 8) => w.write_sample((v * 127.0) as i8).unwrap(),
                    (_, 16) => w.write_sample((v * 32767.0) as i16).unwrap(),
                    (_, 24) => w.write_sample((v * 8388607.0) as i32).unwrap(),
                    _ => w.write_sample((v * 2147483647.0) as i32).unwrap(),
                }
            });
            let out = load_prompt(&tmp.0).unwrap();
            let expected = frames * 8000 / rate as usize;
            assert_eq!(out.len(), expected, "{rate} Hz {bits}-bit");
            let zc = zero_crossings(&out);
            assert!(
                (495..=505).contains(&zc),
                "{rate} Hz {bits}-bit: {zc} crossings"
            );
            let level = rms(&out[200..out.len() - 200]);
            assert!(
                (level - 16384.0 / 2f64.sqrt()).abs() < 500.0,
                "{rate} Hz: rms {level}"
            );
        }
    }

    #[test]
    fn downsampling_is_anti_aliased() {
        // 6 kHz at 16 kHz would alias to 2 kHz without a low-pass filter.
        let tmp = TempPath::new("alias.wav");
        let tone = sine(6000.0, 16000.0, 16000.0, 16000);
        write_spec(
            &tmp.0,
            spec(1, 16000, 16, SampleFormat::Int),
            16000,
            |w, i| {
                w.write_sample(tone[i]).unwrap();
            },
        );
        let out = load_prompt(&tmp.0).unwrap();
        let level = rms(&out[100..7900]);
        assert!(level < 16000.0 * 0.01, "aliased energy rms {level}");
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(load_prompt_from_reader(&b"not a wav file at all"[..]).is_err());
        assert!(load_prompt_from_reader(&b""[..]).is_err());
        assert!(load_prompt(Path::new("/nonexistent/prompt.wav")).is_err());
        // Sample rates outside the supported range (patched into the header directly).
        let tmp = TempPath::new("rate.wav");
        write_wav_mono_8k(&tmp.0, &[0; 10]).unwrap();
        let good = std::fs::read(&tmp.0).unwrap();
        for rate in [0u32, 1, 999, 768_001, u32::MAX] {
            let mut b = good.clone();
            b[24..28].copy_from_slice(&rate.to_le_bytes());
            assert!(load_prompt_from_reader(&b[..]).is_err(), "{rate}");
        }
        // Truncated file: header says more data than there is.
        let tmp = TempPath::new("trunc.wav");
        write_wav_mono_8k(&tmp.0, &[1000; 800]).unwrap();
        let bytes = std::fs::read(&tmp.0).unwrap();
        for cut in [0, 4, 12, 30, 44, 45, 100, bytes.len() - 1] {
            let _ = load_prompt_from_reader(&bytes[..cut]);
        }
        // Corrupted header bytes never panic.
        for i in 0..44 {
            for v in [0u8, 1, 0x7F, 0xFF] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = load_prompt_from_reader(&b[..]);
            }
        }
    }
}
