//! Masking of phone numbers for logs and outputs.

/// Masks a phone number the way Chinese operators expect: `13812345678` → `138****5678`,
/// `+8613812345678` → `+86138****5678`. The four characters before the last four are hidden;
/// numbers shorter than nine characters keep only their last two.
pub fn mask_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    if n == 0 {
        return String::new();
    }
    if n < 9 {
        let keep = n.min(2);
        let mut s: String = std::iter::repeat_n('*', n - keep).collect();
        s.extend(&chars[n - keep..]);
        return s;
    }
    let mut s: String = chars[..n - 8].iter().collect();
    s.push_str("****");
    s.extend(&chars[n - 4..]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_mobile_landline_and_short_numbers() {
        assert_eq!(mask_number("13812345678"), "138****5678");
        assert_eq!(mask_number("+8613812345678"), "+86138****5678");
        assert_eq!(mask_number("075512345678"), "0755****5678");
        assert_eq!(mask_number("10086"), "***86");
        assert_eq!(mask_number("1"), "1");
        assert_eq!(mask_number(""), "");
        assert_eq!(mask_number("一二三四五六七八九十"), "一二****七八九十");
    }
}
