//! The classified end of an attempt.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How an attempt ended, as the business sees it (see `TELEPHONY.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    AnsweredHuman,
    AnsweredMachine,
    Busy,
    NoAnswer,
    Rejected,
    EmptyNumber,
    InvalidFormat,
    PoweredOff,
    Unreachable,
    Suspended,
    NumberChanged,
    Congestion,
    TrunkError,
    Canceled,
    Failed,
    Blocked,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 16] = [
        Outcome::AnsweredHuman,
        Outcome::AnsweredMachine,
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Rejected,
        Outcome::EmptyNumber,
        Outcome::InvalidFormat,
        Outcome::PoweredOff,
        Outcome::Unreachable,
        Outcome::Suspended,
        Outcome::NumberChanged,
        Outcome::Congestion,
        Outcome::TrunkError,
        Outcome::Canceled,
        Outcome::Failed,
        Outcome::Blocked,
    ];

    /// The stable snake_case name used in the API, metrics labels and CDRs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::AnsweredHuman => "answered_human",
            Outcome::AnsweredMachine => "answered_machine",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no_answer",
            Outcome::Rejected => "rejected",
            Outcome::EmptyNumber => "empty_number",
            Outcome::InvalidFormat => "invalid_format",
            Outcome::PoweredOff => "powered_off",
            Outcome::Unreachable => "unreachable",
            Outcome::Suspended => "suspended",
            Outcome::NumberChanged => "number_changed",
            Outcome::Congestion => "congestion",
            Outcome::TrunkError => "trunk_error",
            Outcome::Canceled => "canceled",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
        }
    }

    /// Whether the callee picked up.
    pub fn is_answered(&self) -> bool {
        matches!(self, Outcome::AnsweredHuman | Outcome::AnsweredMachine)
    }

    /// Whether the failure says nothing about the number (our side or the carrier's).
    pub fn is_network_fault(&self) -> bool {
        matches!(
            self,
            Outcome::Congestion | Outcome::TrunkError | Outcome::Failed
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown outcome name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown outcome `{0}`")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
        assert!("nope".parse::<Outcome>().is_err());
    }
}
