//! Phone number text: a basic E.164 normaliser for the campaign engine.
//!
//! Accepts `+86 138-1234-5678`, `008613812345678`, `13812345678` (a Chinese mobile, with the
//! default country +86) and other national numbers with a default country code. The number
//! pool replaces this with full libphonenumber validation.

/// A number that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty number")]
    Empty,
    #[error("unexpected character `{0}`")]
    Character(char),
    #[error("{0} digits is not a valid length")]
    Length(usize),
}

/// Normalises to E.164 (`+8613812345678`) with `default_cc` (digits, e.g. `"86"`).
pub fn normalize_e164(raw: &str, default_cc: &str) -> Result<String, NumberError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(NumberError::Empty);
    }
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '(' | ')' | '.' => {}
            c => return Err(NumberError::Character(c)),
        }
    }
    let e164 = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("{default_cc}{national}")
    } else if default_cc == "86" && digits.len() == 11 && digits.starts_with('1') {
        format!("86{digits}")
    } else if digits.len() > 11 {
        digits
    } else {
        format!("{default_cc}{digits}")
    };
    if !(8..=15).contains(&e164.len()) {
        return Err(NumberError::Length(e164.len()));
    }
    Ok(format!("+{e164}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_chinese_forms() {
        for raw in [
            "13812345678",
            "+86 138-1234-5678",
            "008613812345678",
            " 8613812345678 ",
        ] {
            assert_eq!(
                normalize_e164(raw, "86").unwrap(),
                "+8613812345678",
                "{raw}"
            );
        }
        assert_eq!(
            normalize_e164("0755-12345678", "86").unwrap(),
            "+8675512345678"
        );
        assert_eq!(
            normalize_e164("+1 (212) 555-0100", "86").unwrap(),
            "+12125550100"
        );
        assert_eq!(normalize_e164("", "86").unwrap_err(), NumberError::Empty);
        assert_eq!(
            normalize_e164("138x", "86").unwrap_err(),
            NumberError::Character('x')
        );
        assert_eq!(
            normalize_e164("12", "86").unwrap_err(),
            NumberError::Length(4)
        );
        assert_eq!(
            normalize_e164("+1234567890123456", "86").unwrap_err(),
            NumberError::Length(16)
        );
    }
}
