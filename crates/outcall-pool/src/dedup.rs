//! Deduplication of an import with a bloom filter.
//!
//! The filter holds the blind index of every number already in the campaign and every number
//! seen so far in the upload. A number it has never seen is new for certain and goes straight
//! to the store; a number it may have seen is confirmed by an exact check (the store, and the
//! rows not yet written), so a false positive never drops a number. At a 1 % false-positive
//! rate the filter takes about 1.3 bytes per number, under an eighth of an E.164 number's text.

use fastbloom::BloomFilter;

/// A bloom filter over blind indexes, sized for `expected` numbers at `false_positive_rate`.
pub struct Dedup {
    bloom: BloomFilter,
    expected: usize,
}

impl Dedup {
    /// A filter for `expected` numbers whose false-positive rate stays under
    /// `false_positive_rate`: it is sized for 80 % of it, because a filter's real rate scatters
    /// around the rate it was sized for.
    pub fn new(expected: usize, false_positive_rate: f64) -> Self {
        let expected = expected.max(1024);
        let fp = (false_positive_rate * 0.8).clamp(1e-6, 0.5);
        Dedup {
            bloom: BloomFilter::with_false_pos(fp).expected_items(expected),
            expected,
        }
    }

    /// Adds a number; `true` when it may have been added before (confirm exactly), `false` when
    /// it certainly was not.
    pub fn check_and_insert(&mut self, number_hash: &[u8]) -> bool {
        self.bloom.insert(number_hash)
    }

    /// Whether a number may have been added.
    pub fn may_contain(&self, number_hash: &[u8]) -> bool {
        self.bloom.contains(number_hash)
    }

    /// Size of the filter's bit vector in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.bloom.num_bits() / 8
    }

    pub fn expected(&self) -> usize {
        self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        h[8..16].copy_from_slice(&i.to_be_bytes());
        h
    }

    #[test]
    fn never_misses_what_it_holds_and_stays_under_one_percent_false_positives() {
        let n = 1_000_000u64;
        let mut d = Dedup::new(n as usize, 0.01);
        for i in 0..n {
            d.check_and_insert(&hash(i));
        }
        assert!((0..n).all(|i| d.may_contain(&hash(i))), "no false negative");
        let probes = 200_000u64;
        let fp = (n..n + probes).filter(|i| d.may_contain(&hash(*i))).count();
        let rate = fp as f64 / probes as f64;
        assert!(rate <= 0.01, "false-positive rate {rate}");
        // Raw numbers: E.164 text such as `+8613812345678` is 14 bytes.
        let raw = n as usize * "+8613812345678".len();
        let mem = d.memory_bytes();
        assert!(
            mem * 8 <= raw,
            "filter {mem} bytes for {raw} bytes of numbers"
        );
    }

    #[test]
    fn check_and_insert_says_new_for_new_numbers() {
        let mut d = Dedup::new(10, 0.01);
        assert!(!d.check_and_insert(b"a"));
        assert!(d.check_and_insert(b"a"));
        assert!(d.expected() >= 1024);
    }
}
