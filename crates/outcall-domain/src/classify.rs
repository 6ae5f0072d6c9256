//! Table-driven outcome classification.
//!
//! The evidence of a finished call ([`Evidence`]) is matched against an ordered list of
//! [`Rule`]s; the first rule whose every condition holds gives the [`Outcome`]. The default
//! table follows `TELEPHONY.md` (evidence order: announcement class, then `Reason: Q.850`
//! cause, then SIP final status). Carriers differ, so operators put their own rules in the
//! config; they are tried before the defaults:
//!
//! ```toml
//! [[classification.rules]]
//! status = [404]
//! early_media = true
//! outcome = "empty_number"
//! ```

use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};

/// Why our side ended a call that the far end did not end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalEnd {
    /// We sent CANCEL because the ring timeout expired.
    RingTimeout,
    /// We sent CANCEL for an operator or shutdown.
    OperatorCancel,
    /// The trunk never answered the INVITE (transaction timeout).
    NoResponse,
    /// The trunk refused our credentials.
    AuthFailed,
    /// Transport or internal error before an answer.
    Error,
}

/// What is known about a finished call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Final SIP status of the INVITE, if any.
    pub final_status: Option<u16>,
    /// Q.850 cause from the final response's or BYE's `Reason` header.
    pub q850_cause: Option<u16>,
    /// Any 18x was received.
    pub provisional_seen: bool,
    /// Early media (183 with SDP, or RTP before the answer).
    pub early_media: bool,
    /// A 2xx was received.
    pub answered: bool,
    /// Our side ended the attempt.
    pub local_end: Option<LocalEnd>,
    /// Class of an early-media announcement, when a detector recognised one.
    pub announcement: Option<Outcome>,
    /// Answering-machine detection verdict, when it ran.
    pub machine: Option<bool>,
}

/// A range of SIP status codes: `404` or `"4xx"` in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StatusSpec", into = "StatusSpec")]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub const fn code(c: u16) -> Self {
        StatusRange { lo: c, hi: c }
    }
    pub const fn class(c: u16) -> Self {
        StatusRange {
            lo: c * 100,
            hi: c * 100 + 99,
        }
    }
    fn contains(&self, c: u16) -> bool {
        (self.lo..=self.hi).contains(&c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum StatusSpec {
    Code(u16),
    Class(String),
}

impl TryFrom<StatusSpec> for StatusRange {
    type Error = String;
    fn try_from(s: StatusSpec) -> Result<Self, Self::Error> {
        match s {
            StatusSpec::Code(c) if (100..700).contains(&c) => Ok(StatusRange::code(c)),
            StatusSpec::Code(c) => Err(format!("status {c} is not a SIP status (100..699)")),
            StatusSpec::Class(s) => {
                let b = s.as_bytes();
                if b.len() == 3
                    && (b'1'..=b'6').contains(&b[0])
                    && s[1..].eq_ignore_ascii_case("xx")
                {
                    Ok(StatusRange::class(u16::from(b[0] - b'0')))
                } else {
                    Err(format!(
                        "status `{s}` is neither a code nor a class like \"5xx\""
                    ))
                }
            }
        }
    }
}

impl From<StatusRange> for StatusSpec {
    fn from(r: StatusRange) -> Self {
        if r.lo == r.hi {
            StatusSpec::Code(r.lo)
        } else {
            StatusSpec::Class(format!("{}xx", r.lo / 100))
        }
    }
}

/// One line of the classification table. Empty lists and `None` match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<StatusRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub q850: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_media: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_end: Option<LocalEnd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<bool>,
    pub outcome: Outcome,
}

impl Rule {
    fn new(outcome: Outcome) -> Self {
        Rule {
            status: Vec::new(),
            q850: Vec::new(),
            early_media: None,
            provisional: None,
            local_end: None,
            answered: None,
            machine: None,
            outcome,
        }
    }
    fn status(mut self, codes: &[u16]) -> Self {
        self.status = codes.iter().map(|c| StatusRange::code(*c)).collect();
        self
    }
    fn class(mut self, class: u16) -> Self {
        self.status = vec![StatusRange::class(class)];
        self
    }
    fn q850(mut self, causes: &[u16]) -> Self {
        self.q850 = causes.to_vec();
        self
    }
    fn provisional(mut self, v: bool) -> Self {
        self.provisional = Some(v);
        self
    }
    fn local(mut self, v: LocalEnd) -> Self {
        self.local_end = Some(v);
        self
    }
    fn answered(mut self, v: bool) -> Self {
        self.answered = Some(v);
        self
    }
    fn machine(mut self, v: bool) -> Self {
        self.machine = Some(v);
        self
    }

    /// Whether every condition of the rule holds for `e`.
    pub fn matches(&self, e: &Evidence) -> bool {
        (self.status.is_empty()
            || e.final_status
                .is_some_and(|s| self.status.iter().any(|r| r.contains(s))))
            && (self.q850.is_empty() || e.q850_cause.is_some_and(|c| self.q850.contains(&c)))
            && self.early_media.is_none_or(|v| v == e.early_media)
            && self
                .provisional
                .is_none_or(|v| v == (e.provisional_seen || e.early_media))
            && self.local_end.is_none_or(|v| Some(v) == e.local_end)
            && self.answered.is_none_or(|v| v == e.answered)
            && self.machine.is_none_or(|v| Some(v) == e.machine)
    }
}

/// Classification config: rules tried before the defaults, or instead of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationConfig {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Drop the default table and use only `rules` (plus the `failed` fallback).
    #[serde(default)]
    pub replace_defaults: bool,
}

/// Turns evidence into an outcome with an ordered rule table.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier {
            rules: default_rules(),
        }
    }
}

impl Classifier {
    /// The default table with the config's rules in front.
    pub fn from_config(cfg: &ClassificationConfig) -> Self {
        let mut rules = cfg.rules.clone();
        if !cfg.replace_defaults {
            rules.extend(default_rules());
        }
        Classifier { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The outcome for `e`. Announcement classes win over everything but an answer; a call
    /// no rule matches is `failed`.
    pub fn classify(&self, e: &Evidence) -> Outcome {
        if !e.answered {
            if let Some(o) = e.announcement {
                return o;
            }
        }
        self.rules
            .iter()
            .find(|r| r.matches(e))
            .map(|r| r.outcome)
            .unwrap_or(Outcome::Failed)
    }
}

/// The defaults from `TELEPHONY.md`, in evaluation order.
pub fn default_rules() -> Vec<Rule> {
    use LocalEnd as L;
    use Outcome as O;
    vec![
        // Our side broke (media could not start, transport error): the call failed, even if
        // it was answered.
        Rule::new(O::Failed).local(L::Error),
        // Answered calls: a machine when AMD said so, otherwise a human.
        Rule::new(O::AnsweredMachine).answered(true).machine(true),
        Rule::new(O::AnsweredHuman).answered(true),
        // Our own endings.
        Rule::new(O::NoAnswer).local(L::RingTimeout),
        Rule::new(O::Canceled).local(L::OperatorCancel),
        Rule::new(O::TrunkError).local(L::AuthFailed),
        Rule::new(O::NoAnswer)
            .local(L::NoResponse)
            .provisional(true),
        Rule::new(O::TrunkError).local(L::NoResponse),
        // Q.850 causes (more specific than the SIP status).
        Rule::new(O::EmptyNumber).q850(&[1]),
        Rule::new(O::TrunkError).q850(&[2, 3]),
        Rule::new(O::Busy).q850(&[17]),
        Rule::new(O::Unreachable).q850(&[18, 27]),
        Rule::new(O::NoAnswer).q850(&[19]),
        Rule::new(O::PoweredOff).q850(&[20]),
        Rule::new(O::Rejected).q850(&[21]),
        Rule::new(O::NumberChanged).q850(&[22]),
        Rule::new(O::InvalidFormat).q850(&[28]),
        Rule::new(O::Congestion).q850(&[34, 38, 41, 42]),
        // SIP status. A 403/404 right after the INVITE, with no 18x and no early media,
        // usually means our routing or account is wrong, not the number.
        Rule::new(O::TrunkError).status(&[401, 407]),
        Rule::new(O::TrunkError)
            .status(&[403, 404])
            .provisional(false),
        Rule::new(O::EmptyNumber).status(&[404, 604, 485]),
        Rule::new(O::InvalidFormat).status(&[484]),
        Rule::new(O::Busy).status(&[486, 600]),
        Rule::new(O::NoAnswer).status(&[480, 408]).provisional(true),
        Rule::new(O::Unreachable).status(&[480, 408]),
        Rule::new(O::Rejected).status(&[603, 403]),
        Rule::new(O::NumberChanged).status(&[410, 301]),
        Rule::new(O::Congestion).status(&[500, 502, 503, 504]),
        Rule::new(O::Congestion).class(5),
        Rule::new(O::Rejected).class(6),
        Rule::new(O::Failed).class(4),
        Rule::new(O::Failed).class(3),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome as O;

    fn ev(status: Option<u16>, q850: Option<u16>, provisional: bool, early: bool) -> Evidence {
        Evidence {
            final_status: status,
            q850_cause: q850,
            provisional_seen: provisional,
            early_media: early,
            ..Evidence::default()
        }
    }

    #[test]
    fn defaults_follow_the_telephony_table() {
        let c = Classifier::default();
        let cases: &[(Evidence, Outcome)] = &[
            (ev(Some(486), Some(17), false, false), O::Busy),
            (ev(Some(486), None, true, false), O::Busy),
            (ev(Some(600), None, false, false), O::Busy),
            (ev(Some(404), Some(1), false, false), O::EmptyNumber),
            (ev(Some(404), None, false, false), O::TrunkError),
            (ev(Some(404), None, true, true), O::EmptyNumber),
            (ev(Some(604), None, false, false), O::EmptyNumber),
            (ev(Some(484), None, false, false), O::InvalidFormat),
            (ev(Some(480), Some(20), false, false), O::PoweredOff),
            (ev(Some(480), None, false, false), O::Unreachable),
            (ev(Some(480), None, true, false), O::NoAnswer),
            (ev(Some(408), Some(19), true, false), O::NoAnswer),
            (ev(Some(503), None, false, false), O::Congestion),
            (ev(Some(500), Some(38), false, false), O::Congestion),
            (ev(Some(599), None, false, false), O::Congestion),
            (ev(Some(603), None, true, false), O::Rejected),
            (ev(Some(403), None, false, false), O::TrunkError),
            (ev(Some(403), None, true, false), O::Rejected),
            (ev(Some(410), None, false, false), O::NumberChanged),
            (ev(Some(486), Some(1), true, true), O::EmptyNumber),
            (ev(Some(486), Some(3), false, false), O::TrunkError),
            (ev(Some(420), None, false, false), O::Failed),
            (ev(None, None, false, false), O::Failed),
        ];
        for (e, want) in cases {
            assert_eq!(c.classify(e), *want, "{e:?}");
        }
    }

    #[test]
    fn local_endings_and_answers() {
        let c = Classifier::default();
        let mut e = ev(Some(487), None, true, false);
        e.local_end = Some(LocalEnd::RingTimeout);
        assert_eq!(c.classify(&e), O::NoAnswer);
        e.local_end = Some(LocalEnd::OperatorCancel);
        assert_eq!(c.classify(&e), O::Canceled);
        let mut e = ev(Some(401), None, false, false);
        e.local_end = Some(LocalEnd::AuthFailed);
        assert_eq!(c.classify(&e), O::TrunkError);
        let mut e = ev(None, None, false, false);
        e.local_end = Some(LocalEnd::NoResponse);
        assert_eq!(c.classify(&e), O::TrunkError);
        e.provisional_seen = true;
        assert_eq!(c.classify(&e), O::NoAnswer);
        let mut e = ev(Some(200), Some(16), true, true);
        e.answered = true;
        assert_eq!(c.classify(&e), O::AnsweredHuman);
        e.machine = Some(true);
        assert_eq!(c.classify(&e), O::AnsweredMachine);
        e.local_end = Some(LocalEnd::Error);
        assert_eq!(c.classify(&e), O::Failed);
        // An announcement class wins over the SIP status, but not over an answer.
        let mut e = ev(Some(486), Some(17), true, true);
        e.announcement = Some(O::PoweredOff);
        assert_eq!(c.classify(&e), O::PoweredOff);
    }

    #[test]
    fn config_rules_come_first_and_parse_from_toml() {
        let cfg: ClassificationConfig = toml::from_str(
            r#"
            [[rules]]
            status = [404]
            outcome = "empty_number"

            [[rules]]
            status = ["5xx"]
            q850 = [34]
            outcome = "unreachable"
            "#,
        )
        .unwrap();
        let c = Classifier::from_config(&cfg);
        assert_eq!(
            c.classify(&ev(Some(404), None, false, false)),
            O::EmptyNumber
        );
        assert_eq!(
            c.classify(&ev(Some(503), Some(34), false, false)),
            O::Unreachable
        );
        assert_eq!(
            c.classify(&ev(Some(503), None, false, false)),
            O::Congestion
        );
        assert_eq!(c.rules().len(), default_rules().len() + 2);
        let only: ClassificationConfig =
            toml::from_str("replace_defaults = true\n[[rules]]\nstatus=[486]\noutcome=\"busy\"")
                .unwrap();
        let c = Classifier::from_config(&only);
        assert_eq!(c.classify(&ev(Some(486), None, false, false)), O::Busy);
        assert_eq!(c.classify(&ev(Some(503), None, false, false)), O::Failed);
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let e = toml::from_str::<ClassificationConfig>("[[rules]]\nstatus=[999]\noutcome=\"busy\"")
            .unwrap_err();
        assert!(e.to_string().contains("not a SIP status"), "{e}");
        let e =
            toml::from_str::<ClassificationConfig>("[[rules]]\nstatus=[\"7xx\"]\noutcome=\"busy\"")
                .unwrap_err();
        assert!(e.to_string().contains("class like"), "{e}");
        let e = toml::from_str::<ClassificationConfig>("[[rules]]\noutcome=\"bored\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let e = toml::from_str::<ClassificationConfig>("[[rules]]\nstatuz=[1]\noutcome=\"busy\"")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn rules_round_trip_through_toml() {
        let cfg = ClassificationConfig {
            rules: default_rules(),
            replace_defaults: true,
        };
        let text = toml::to_string(&cfg).unwrap();
        let back: ClassificationConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
}
