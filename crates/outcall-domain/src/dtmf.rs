//! DTMF rules of a voice script: what a key press does.
//!
//! `"press 1 to confirm, 2 to repeat"` is `{ "1": confirm, "2": repeat }`. A key without a rule
//! is recorded and otherwise ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a key press does to the running prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DtmfAction {
    /// Record the answer and hang up.
    Confirm,
    /// Play the prompt again from its start.
    Repeat,
    /// Hang up at once.
    Hangup,
}

/// Key → action, plus how often a prompt may be repeated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DtmfRules {
    #[serde(default)]
    pub keys: BTreeMap<char, DtmfAction>,
    /// How many times `repeat` may restart the prompt (default 3).
    #[serde(default = "default_max_repeats")]
    pub max_repeats: u32,
}

fn default_max_repeats() -> u32 {
    3
}

impl DtmfRules {
    /// Parses the compact CLI form `1=confirm,2=repeat,#=hangup`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, a) = part
                .split_once('=')
                .ok_or_else(|| format!("dtmf rule `{part}` is not of the form KEY=ACTION"))?;
            let mut chars = k.trim().chars();
            let key = match (chars.next(), chars.next()) {
                (Some(c), None) if "0123456789*#ABCD".contains(c) => c,
                _ => return Err(format!("dtmf key `{k}` is not one of 0-9 * # A-D")),
            };
            let action = match a.trim() {
                "confirm" => DtmfAction::Confirm,
                "repeat" => DtmfAction::Repeat,
                "hangup" => DtmfAction::Hangup,
                other => {
                    return Err(format!(
                        "dtmf action `{other}` is not one of confirm, repeat, hangup"
                    ))
                }
            };
            keys.insert(key, action);
        }
        Ok(DtmfRules {
            keys,
            max_repeats: default_max_repeats(),
        })
    }

    /// The action for a key, if any.
    pub fn action(&self, key: char) -> Option<DtmfAction> {
        self.keys.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_rules_and_rejects_bad_ones() {
        let r = DtmfRules::parse("1=confirm, 2=repeat,#=hangup").unwrap();
        assert_eq!(r.action('1'), Some(DtmfAction::Confirm));
        assert_eq!(r.action('2'), Some(DtmfAction::Repeat));
        assert_eq!(r.action('#'), Some(DtmfAction::Hangup));
        assert_eq!(r.action('3'), None);
        assert!(DtmfRules::parse("x=confirm")
            .unwrap_err()
            .contains("not one of 0-9"));
        assert!(DtmfRules::parse("1=dance")
            .unwrap_err()
            .contains("confirm, repeat, hangup"));
        assert!(DtmfRules::parse("1").unwrap_err().contains("KEY=ACTION"));
        assert!(DtmfRules::parse("").unwrap().keys.is_empty());
    }
}
