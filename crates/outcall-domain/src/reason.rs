//! `Reason` header parsing (RFC 3326).
//!
//! Carriers tell why a call failed or ended with `Reason: Q.850;cause=17;text="User busy"`,
//! sometimes with several values (`SIP;cause=200, Q.850;cause=16`). The parser takes the raw
//! header value from an untrusted peer, so it never panics and ignores what it cannot read.

/// One protocol value of a `Reason` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonValue {
    /// `Q.850`, `SIP`, … as written by the peer (compared case-insensitively).
    pub protocol: String,
    /// The `cause` parameter, when present and numeric.
    pub cause: Option<u16>,
    /// The `text` parameter without its quotes.
    pub text: Option<String>,
}

impl ReasonValue {
    /// Whether this value carries an ITU-T Q.850 cause.
    pub fn is_q850(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("q.850")
    }
}

/// Longest header value we look at; anything beyond is ignored (hostile peers send huge ones).
const MAX_LEN: usize = 4096;

/// Parses a `Reason` header value into its protocol values.
pub fn parse_reason_header(value: &str) -> Vec<ReasonValue> {
    let value = truncate_on_char_boundary(value, MAX_LEN);
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|part| {
            let mut params = split_outside_quotes(part, ';').into_iter();
            let protocol = params.next()?.trim();
            if protocol.is_empty() || protocol.len() > 32 {
                return None;
            }
            let mut rv = ReasonValue {
                protocol: protocol.to_string(),
                cause: None,
                text: None,
            };
            for p in params {
                let (k, v) = match p.split_once('=') {
                    Some((k, v)) => (k.trim(), v.trim()),
                    None => continue,
                };
                if k.eq_ignore_ascii_case("cause") {
                    rv.cause = v.parse::<u16>().ok();
                } else if k.eq_ignore_ascii_case("text") {
                    let t = v.strip_prefix('"').unwrap_or(v);
                    let t = t.strip_suffix('"').unwrap_or(t);
                    rv.text = Some(t.replace("\\\"", "\""));
                }
            }
            Some(rv)
        })
        .collect()
}

/// The Q.850 cause of the first Q.850 value among the given `Reason` header values.
pub fn q850_cause<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<u16> {
    values
        .into_iter()
        .flat_map(parse_reason_header)
        .find(|r| r.is_q850())
        .and_then(|r| r.cause)
}

fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_single_q850_value() {
        let v = parse_reason_header(r#"Q.850;cause=16;text="Normal call clearing""#);
        assert_eq!(
            v,
            vec![ReasonValue {
                protocol: "Q.850".into(),
                cause: Some(16),
                text: Some("Normal call clearing".into())
            }]
        );
    }

    #[test]
    fn parses_several_values_with_commas_in_quotes() {
        let v = parse_reason_header(
            r#"SIP ;cause=200 ;text="Call completed, elsewhere", q.850; CAUSE = 17"#,
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].protocol, "SIP");
        assert_eq!(v[0].cause, Some(200));
        assert_eq!(v[0].text.as_deref(), Some("Call completed, elsewhere"));
        assert!(v[1].is_q850());
        assert_eq!(v[1].cause, Some(17));
        assert_eq!(q850_cause([r#"SIP;cause=487"#, "Q.850;cause=1"]), Some(1));
    }

    #[test]
    fn ignores_garbage() {
        assert_eq!(q850_cause(["Q.850;cause=abc"]), None);
        assert_eq!(q850_cause(["Q.850;cause=99999999"]), None);
        assert_eq!(q850_cause([""]), None);
        assert_eq!(q850_cause([";;;,,,\"\"\"\\"]), None);
        let huge = format!("Q.850;cause=1;text=\"{}\"", "é".repeat(100_000));
        assert_eq!(q850_cause([huge.as_str()]), Some(1));
    }
}
