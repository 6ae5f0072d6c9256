//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) codecs.
//!
//! Encoding follows the classic Sun Microsystems reference implementation (`g711.c`): μ-law
//! adds a bias of 0x84 to the 16-bit magnitude, A-law works on the 13-bit magnitude and
//! inverts even bits with 0x55. Encoding is computed arithmetically (a handful of integer
//! operations using `leading_zeros`), decoding uses 256-entry tables built at compile time.

/// The audio codecs the dialer negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, static RTP payload type 0.
    Pcmu,
    /// G.711 A-law, static RTP payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn payload_type(&self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` lines.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec for a static payload type, if it is one we support.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// Encodes linear PCM, appending one byte per sample to `out`.
    pub fn encode(&self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len());
        match self {
            Codec::Pcmu => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
            Codec::Pcma => out.extend(pcm.iter().map(|&s| linear_to_alaw(s))),
        }
    }

    /// Decodes G.711 bytes, appending one sample per byte to `out`.
    pub fn decode(&self, data: &[u8], out: &mut Vec<i16>) {
        out.reserve(data.len());
        match self {
            Codec::Pcmu => out.extend(data.iter().map(|&b| ULAW_DECODE[b as usize])),
            Codec::Pcma => out.extend(data.iter().map(|&b| ALAW_DECODE[b as usize])),
        }
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample to μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let pcm = sample as i32;
    let (magnitude, mask) = if pcm < 0 { (-pcm, 0x7F) } else { (pcm, 0xFF) };
    // Clipping here is equivalent to the reference's "segment >= 8" branch.
    // Biased magnitude is 0x84..=0x7FFF.
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the highest set bit minus 7 (0x80..=0xFF is segment 0).
    let seg = 31 - (biased as u32).leading_zeros() as i32 - 7;
    let uval = (seg << 4) | ((biased >> (seg + 3)) & 0x0F);
    (uval ^ mask) as u8
}

/// Decodes one μ-law byte to 16-bit linear.
#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_DECODE[byte as usize]
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3; // 13-bit
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // pcm is 0..=0xFFF here; segment 0 covers 0..=0x1F.
    let seg = if pcm < 0x20 {
        0
    } else {
        31 - (pcm as u32).leading_zeros() as i32 - 4
    };
    let quant = if seg < 2 {
        (pcm >> 1) & 0x0F
    } else {
        (pcm >> seg) & 0x0F
    };
    (((seg << 4) | quant) ^ mask) as u8
}

/// Decodes one A-law byte to 16-bit linear.
#[inline]
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_DECODE[byte as usize]
}

const fn ulaw_decode_one(byte: u8) -> i16 {
    let u = !byte;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn alaw_decode_one(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_one(i as u8)
        } else {
            ulaw_decode_one(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = build_table(false);
static ALAW_DECODE: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight port of the Sun reference `linear2ulaw` (segment search variant).
    fn ref_linear2ulaw(pcm: i16) -> u8 {
        const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
        let mut v = pcm as i32;
        let mask;
        if v < 0 {
            v = 0x84 - v;
            mask = 0x7F;
        } else {
            v += 0x84;
            mask = 0xFF;
        }
        let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            (0x7F ^ mask) as u8
        } else {
            (((seg << 4) | ((v >> (seg + 3)) & 0xF)) ^ mask) as u8
        }
    }

    /// Straight port of the Sun reference `linear2alaw`.
    fn ref_linear2alaw(pcm: i16) -> u8 {
        const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
        let mut v = (pcm as i32) >> 3;
        let mask;
        if v >= 0 {
            mask = 0xD5;
        } else {
            mask = 0x55;
            v = -v - 1;
        }
        let seg = SEG_AEND.iter().position(|&e| v <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut aval = seg << 4;
        if seg < 2 {
            aval |= (v >> 1) & 0xF;
        } else {
            aval |= (v >> seg) & 0xF;
        }
        (aval ^ mask) as u8
    }

    #[test]
    fn encoders_match_reference_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(s), ref_linear2ulaw(s), "ulaw {s}");
            assert_eq!(linear_to_alaw(s), ref_linear2alaw(s), "alaw {s}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn silence_encoding() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        let mut out = Vec::new();
        Codec::Pcmu.encode(&[0; 4], &mut out);
        Codec::Pcma.encode(&[0; 4], &mut out);
        assert_eq!(out, [0xFF, 0xFF, 0xFF, 0xFF, 0xD5, 0xD5, 0xD5, 0xD5]);
    }

    #[test]
    fn round_trip_error_bounds() {
        let mut max_u = 0;
        let mut max_a = 0;
        for s in i16::MIN..=i16::MAX {
            let x = s as i32;
            let eu = (x - ulaw_to_linear(linear_to_ulaw(s)) as i32).abs();
            let ea = (x - alaw_to_linear(linear_to_alaw(s)) as i32).abs();
            // Error is bounded by half a quantisation step (~1/32 of the magnitude), plus
            // the clipping of the very top of the range.
            let clip_u = (x.abs() - 32124).max(0);
            let clip_a = (x.abs() - 32256).max(0);
            assert!(eu <= x.abs() / 32 + 8 + clip_u, "ulaw {s}: error {eu}");
            assert!(ea <= x.abs() / 32 + 16 + clip_a, "alaw {s}: error {ea}");
            max_u = max_u.max(eu);
            max_a = max_a.max(ea);
        }
        assert!(max_u <= 1024 && max_a <= 1024, "{max_u} {max_a}");
    }

    #[test]
    fn decode_tables_are_stable_under_reencoding() {
        for b in 0..=255u8 {
            let lu = ulaw_to_linear(b);
            let la = alaw_to_linear(b);
            // Re-encoding a decoded value yields the same value (0x7F is the -0 alias of 0xFF).
            assert_eq!(ulaw_to_linear(linear_to_ulaw(lu)), lu, "ulaw {b:#x}");
            assert_eq!(linear_to_alaw(la), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn codec_metadata_and_bulk() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.name(), "PCMU");
        assert_eq!(Codec::Pcma.name(), "PCMA");
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);

        let pcm: Vec<i16> = (0..160).map(|i: i32| ((i - 80) * 400) as i16).collect();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = vec![0xAB];
            codec.encode(&pcm, &mut enc);
            assert_eq!(enc.len(), 161);
            assert_eq!(enc[0], 0xAB, "encode appends");
            let mut dec = vec![7];
            codec.decode(&enc[1..], &mut dec);
            assert_eq!(dec.len(), 161);
            assert_eq!(dec[0], 7, "decode appends");
            for (a, b) in pcm.iter().zip(&dec[1..]) {
                assert!((*a as i32 - *b as i32).abs() <= 1024);
            }
        }
    }
}
