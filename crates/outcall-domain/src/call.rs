//! The call state machine.
//!
//! ```text
//! queued ──dial──> dialing ──ringing──> ringing ──answer──> answered ──hangup──> completed
//!    │               │  └──early_media──> early_media ─┘        │
//!    │               │            (ringing ⇄ early media)        └──error──> failed
//!    │               └──final non-2xx──> unanswered   (also from ringing / early_media)
//!    │               └──canceled (487 after our CANCEL)──> canceled
//!    └──abandon──> canceled              any live state ──error / timeout──> failed
//! ```
//!
//! Each transition is a typed [`CallEvent`]; an event that does not apply to the current state
//! is an error ([`TransitionError`]) and leaves the call unchanged. Terminal states accept no
//! event. While events are applied the machine gathers the [`Evidence`] the classifier needs.

use crate::classify::{Evidence, LocalEnd};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Waiting to be dialed.
    Queued,
    /// INVITE sent, no 18x yet.
    Dialing,
    /// 180 (or 183 without SDP) received: the callee's phone is ringing.
    Ringing,
    /// 183 with SDP: the network plays us audio (ringback, announcement) before any answer.
    EarlyMedia,
    /// 2xx received and ACKed: the conversation is on.
    Answered,
    /// An answered call that ended with a BYE from either side.
    Completed,
    /// The INVITE got a final non-2xx response.
    Unanswered,
    /// We cancelled: before dialing, or with CANCEL (ring timeout, operator, shutdown).
    Canceled,
    /// Timeout, transport or internal error.
    Failed,
}

impl CallState {
    /// Every state, in declaration order.
    pub const ALL: [CallState; 9] = [
        CallState::Queued,
        CallState::Dialing,
        CallState::Ringing,
        CallState::EarlyMedia,
        CallState::Answered,
        CallState::Completed,
        CallState::Unanswered,
        CallState::Canceled,
        CallState::Failed,
    ];

    /// Whether no event can move the call any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CallState::Completed | CallState::Unanswered | CallState::Canceled | CallState::Failed
        )
    }

    /// The stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallState::Queued => "queued",
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::EarlyMedia => "early_media",
            CallState::Answered => "answered",
            CallState::Completed => "completed",
            CallState::Unanswered => "unanswered",
            CallState::Canceled => "canceled",
            CallState::Failed => "failed",
        }
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HangupParty {
    /// Our side sent BYE (end of prompt, DTMF rule, max duration, shutdown).
    Local,
    /// The callee or the network sent BYE.
    Remote,
}

/// Why we cancelled a call that was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelCause {
    /// The ring timeout expired.
    RingTimeout,
    /// An operator or the shutdown stopped the call.
    Operator,
}

/// Something that happened to a call. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    /// The INVITE left.
    Dial,
    /// `100 Trying` (hop-by-hop; the call stays in dialing).
    Trying,
    /// A 18x without SDP (or `180 Ringing` with it: ringback is still ringing).
    Ringing { status: u16 },
    /// A 18x carrying SDP: early media starts.
    EarlyMedia { status: u16 },
    /// A 2xx to the INVITE.
    Answer { status: u16 },
    /// A final non-2xx response, with the Q.850 cause of its `Reason` header.
    Rejected { status: u16, q850: Option<u16> },
    /// The call was cancelled by us; `status` is the final response seen (usually 487).
    Canceled {
        cause: CancelCause,
        status: Option<u16>,
    },
    /// BYE from either side of an answered call, with the Q.850 cause if any.
    Hangup { by: HangupParty, q850: Option<u16> },
    /// No final response at all (INVITE transaction timeout, timer B).
    Timeout,
    /// Our credentials were refused (a second 401/407 after we answered the challenge).
    AuthFailed { status: u16 },
    /// A transport or internal error.
    Error { reason: String },
}

impl CallEvent {
    /// The stable snake_case name of the event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::Dial => "dial",
            CallEvent::Trying => "trying",
            CallEvent::Ringing { .. } => "ringing",
            CallEvent::EarlyMedia { .. } => "early_media",
            CallEvent::Answer { .. } => "answer",
            CallEvent::Rejected { .. } => "rejected",
            CallEvent::Canceled { .. } => "canceled",
            CallEvent::Hangup { .. } => "hangup",
            CallEvent::Timeout => "timeout",
            CallEvent::AuthFailed { .. } => "auth_failed",
            CallEvent::Error { .. } => "error",
        }
    }
}

/// An event that the current state does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: event `{event}` in state `{state}`")]
pub struct TransitionError {
    pub state: CallState,
    pub event: &'static str,
}

/// Pure transition function: the state after `event` in `state`, or an error.
pub fn next_state(state: CallState, event: &CallEvent) -> Result<CallState, TransitionError> {
    use CallEvent as E;
    use CallState as S;
    let next = match (state, event) {
        (S::Queued, E::Dial) => S::Dialing,
        (S::Queued, E::Canceled { .. }) => S::Canceled,
        (S::Dialing, E::Trying) => S::Dialing,
        (S::Dialing | S::Ringing, E::Ringing { .. }) => S::Ringing,
        (S::EarlyMedia, E::Ringing { .. }) => S::EarlyMedia,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::EarlyMedia { .. }) => S::EarlyMedia,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::Answer { .. }) => S::Answered,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::Rejected { .. }) => S::Unanswered,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::AuthFailed { .. }) => S::Unanswered,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::Canceled { .. }) => S::Canceled,
        (S::Dialing | S::Ringing | S::EarlyMedia, E::Timeout) => S::Failed,
        (S::Dialing | S::Ringing | S::EarlyMedia | S::Answered, E::Error { .. }) => S::Failed,
        (S::Answered, E::Hangup { .. }) => S::Completed,
        _ => {
            return Err(TransitionError {
                state,
                event: event.kind(),
            })
        }
    };
    Ok(next)
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: CallState,
    pub to: CallState,
    #[serde(flatten)]
    pub event: CallEvent,
}

/// A call: its state, its history and the evidence for classification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    state: CallState,
    history: Vec<Transition>,
    evidence: Evidence,
    /// When the INVITE left.
    pub invite_at_ms: Option<u64>,
    /// First 18x.
    pub ring_at_ms: Option<u64>,
    /// First 183 with SDP.
    pub early_media_at_ms: Option<u64>,
    /// 2xx.
    pub answer_at_ms: Option<u64>,
    /// Terminal state reached.
    pub end_at_ms: Option<u64>,
    /// Who hung up an answered call.
    pub hangup_by: Option<HangupParty>,
}

impl Default for Call {
    fn default() -> Self {
        Self::new()
    }
}

impl Call {
    /// A queued call.
    pub fn new() -> Self {
        Call {
            state: CallState::Queued,
            history: Vec::new(),
            evidence: Evidence::default(),
            invite_at_ms: None,
            ring_at_ms: None,
            early_media_at_ms: None,
            answer_at_ms: None,
            end_at_ms: None,
            hangup_by: None,
        }
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    pub fn history(&self) -> &[Transition] {
        &self.history
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// Marks that RTP arrived before the answer (some carriers send early media without SDP
    /// in a 183 that was already seen, or a 180 with SDP).
    pub fn note_early_media_packets(&mut self) {
        if !self.state.is_terminal() && self.answer_at_ms.is_none() {
            self.evidence.early_media = true;
        }
    }

    /// Applies an event at `at_ms`. An illegal event leaves the call untouched.
    pub fn apply(&mut self, event: CallEvent, at_ms: u64) -> Result<CallState, TransitionError> {
        let from = self.state;
        let to = next_state(from, &event)?;
        let ev = &mut self.evidence;
        match &event {
            CallEvent::Dial => self.invite_at_ms = Some(at_ms),
            CallEvent::Trying => {}
            CallEvent::Ringing { .. } => {
                ev.provisional_seen = true;
                self.ring_at_ms.get_or_insert(at_ms);
            }
            CallEvent::EarlyMedia { .. } => {
                ev.provisional_seen = true;
                ev.early_media = true;
                self.ring_at_ms.get_or_insert(at_ms);
                self.early_media_at_ms.get_or_insert(at_ms);
            }
            CallEvent::Answer { status } => {
                ev.final_status = Some(*status);
                ev.answered = true;
                self.answer_at_ms = Some(at_ms);
            }
            CallEvent::Rejected { status, q850 } => {
                ev.final_status = Some(*status);
                ev.q850_cause = *q850;
            }
            CallEvent::AuthFailed { status } => {
                ev.final_status = Some(*status);
                ev.local_end = Some(LocalEnd::AuthFailed);
            }
            CallEvent::Canceled { cause, status } => {
                ev.final_status = *status;
                ev.local_end = Some(match cause {
                    CancelCause::RingTimeout => LocalEnd::RingTimeout,
                    CancelCause::Operator => LocalEnd::OperatorCancel,
                });
            }
            CallEvent::Hangup { by, q850 } => {
                self.hangup_by = Some(*by);
                if q850.is_some() {
                    ev.q850_cause = *q850;
                }
            }
            CallEvent::Timeout => ev.local_end = Some(LocalEnd::NoResponse),
            CallEvent::Error { .. } => ev.local_end = Some(LocalEnd::Error),
        }
        if to.is_terminal() {
            self.end_at_ms = Some(at_ms);
        }
        self.state = to;
        self.history.push(Transition {
            at_ms,
            from,
            to,
            event,
        });
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events() -> Vec<CallEvent> {
        vec![
            CallEvent::Dial,
            CallEvent::Trying,
            CallEvent::Ringing { status: 180 },
            CallEvent::EarlyMedia { status: 183 },
            CallEvent::Answer { status: 200 },
            CallEvent::Rejected {
                status: 486,
                q850: Some(17),
            },
            CallEvent::Canceled {
                cause: CancelCause::RingTimeout,
                status: Some(487),
            },
            CallEvent::Hangup {
                by: HangupParty::Remote,
                q850: Some(16),
            },
            CallEvent::Timeout,
            CallEvent::AuthFailed { status: 401 },
            CallEvent::Error { reason: "x".into() },
        ]
    }

    /// The full table: every (state, event) pair, written out by hand.
    #[test]
    fn transition_table_is_exactly_as_designed() {
        use CallState as S;
        // Order of columns: dial, trying, ringing, early, answer, rejected, canceled, hangup,
        // timeout, auth_failed, error. `None` = illegal.
        let table: [(CallState, [Option<CallState>; 11]); 9] = [
            (
                S::Queued,
                [
                    Some(S::Dialing),
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(S::Canceled),
                    None,
                    None,
                    None,
                    None,
                ],
            ),
            (
                S::Dialing,
                [
                    None,
                    Some(S::Dialing),
                    Some(S::Ringing),
                    Some(S::EarlyMedia),
                    Some(S::Answered),
                    Some(S::Unanswered),
                    Some(S::Canceled),
                    None,
                    Some(S::Failed),
                    Some(S::Unanswered),
                    Some(S::Failed),
                ],
            ),
            (
                S::Ringing,
                [
                    None,
                    None,
                    Some(S::Ringing),
                    Some(S::EarlyMedia),
                    Some(S::Answered),
                    Some(S::Unanswered),
                    Some(S::Canceled),
                    None,
                    Some(S::Failed),
                    Some(S::Unanswered),
                    Some(S::Failed),
                ],
            ),
            (
                S::EarlyMedia,
                [
                    None,
                    None,
                    Some(S::EarlyMedia),
                    Some(S::EarlyMedia),
                    Some(S::Answered),
                    Some(S::Unanswered),
                    Some(S::Canceled),
                    None,
                    Some(S::Failed),
                    Some(S::Unanswered),
                    Some(S::Failed),
                ],
            ),
            (
                S::Answered,
                [
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(S::Completed),
                    None,
                    None,
                    Some(S::Failed),
                ],
            ),
            (S::Completed, [None; 11]),
            (S::Unanswered, [None; 11]),
            (S::Canceled, [None; 11]),
            (S::Failed, [None; 11]),
        ];
        assert_eq!(table.len(), CallState::ALL.len());
        for (state, row) in table {
            for (event, expected) in all_events().iter().zip(row) {
                let got = next_state(state, event).ok();
                assert_eq!(got, expected, "state {state}, event {}", event.kind());
                if let Some(next) = expected {
                    assert!(!state.is_terminal());
                    let _ = next;
                }
            }
        }
    }

    #[test]
    fn illegal_event_is_an_error_and_changes_nothing() {
        let mut c = Call::new();
        let err = c.apply(CallEvent::Answer { status: 200 }, 1).unwrap_err();
        assert_eq!(
            err,
            TransitionError {
                state: CallState::Queued,
                event: "answer"
            }
        );
        assert_eq!(
            err.to_string(),
            "illegal transition: event `answer` in state `queued`"
        );
        assert_eq!(c.state(), CallState::Queued);
        assert!(c.history().is_empty());
        c.apply(CallEvent::Dial, 2).unwrap();
        c.apply(
            CallEvent::Rejected {
                status: 486,
                q850: Some(17),
            },
            3,
        )
        .unwrap();
        for ev in all_events() {
            assert!(c.apply(ev, 4).is_err());
        }
        assert_eq!(c.history().len(), 2);
        assert_eq!(c.end_at_ms, Some(3));
    }

    #[test]
    fn answered_call_records_times_and_evidence() {
        let mut c = Call::new();
        c.apply(CallEvent::Dial, 1000).unwrap();
        c.apply(CallEvent::Trying, 1010).unwrap();
        c.apply(CallEvent::Ringing { status: 180 }, 1100).unwrap();
        c.apply(CallEvent::EarlyMedia { status: 183 }, 1200)
            .unwrap();
        c.apply(CallEvent::Ringing { status: 180 }, 1250).unwrap();
        assert_eq!(c.state(), CallState::EarlyMedia);
        c.apply(CallEvent::Answer { status: 200 }, 3000).unwrap();
        c.apply(
            CallEvent::Hangup {
                by: HangupParty::Remote,
                q850: Some(16),
            },
            9000,
        )
        .unwrap();
        assert_eq!(c.state(), CallState::Completed);
        assert_eq!(
            (
                c.invite_at_ms,
                c.ring_at_ms,
                c.early_media_at_ms,
                c.answer_at_ms,
                c.end_at_ms
            ),
            (Some(1000), Some(1100), Some(1200), Some(3000), Some(9000))
        );
        assert_eq!(c.hangup_by, Some(HangupParty::Remote));
        let e = c.evidence();
        assert!(e.answered && e.early_media && e.provisional_seen);
        assert_eq!((e.final_status, e.q850_cause), (Some(200), Some(16)));
        let states: Vec<_> = c.history().iter().map(|t| t.to).collect();
        assert_eq!(states.last(), Some(&CallState::Completed));
        assert_eq!(states.len(), 7);
    }

    #[test]
    fn transitions_serialise_with_their_event() {
        let t = Transition {
            at_ms: 5,
            from: CallState::Dialing,
            to: CallState::Unanswered,
            event: CallEvent::Rejected {
                status: 486,
                q850: Some(17),
            },
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"at_ms":5,"from":"dialing","to":"unanswered","event":"rejected","status":486,"q850":17}"#
        );
    }
}
