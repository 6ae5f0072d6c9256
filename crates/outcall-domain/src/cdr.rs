//! The call detail record.

use crate::call::{Call, CallState, HangupParty};
use crate::classify::Classifier;
use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};

/// The record of one attempt. Times are milliseconds since the Unix epoch. The callee number
/// is kept masked: the full number lives only in the encrypted store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cdr {
    pub attempt_id: String,
    pub trace_id: String,
    /// SIP Call-ID of the INVITE.
    pub call_id: String,
    pub trunk: String,
    pub node: String,
    /// Caller ID used (From user).
    pub caller_id: String,
    /// Callee, masked (`138****5678`).
    pub callee: String,
    pub final_state: CallState,
    pub outcome: Outcome,
    pub sip_status: Option<u16>,
    pub q850_cause: Option<u16>,
    pub queued_at_ms: Option<u64>,
    /// When the scheduler dispatched the attempt (took its pacing slots).
    #[serde(default)]
    pub dispatched_at_ms: Option<u64>,
    pub invite_at_ms: Option<u64>,
    pub ring_at_ms: Option<u64>,
    pub early_media_at_ms: Option<u64>,
    pub answer_at_ms: Option<u64>,
    pub end_at_ms: Option<u64>,
    /// INVITE to the first 18x or final response.
    pub setup_ms: Option<u64>,
    /// INVITE to end.
    pub duration_ms: u64,
    /// Answer to end, rounded up to whole seconds (what carriers bill).
    pub billsec: u64,
    pub hangup_by: Option<HangupParty>,
    pub early_media: bool,
    /// DTMF digits collected, in order.
    pub dtmf: String,
    pub recording: Option<String>,
    pub rtp_packets_sent: u64,
    pub rtp_packets_received: u64,
    pub rtp_packets_lost: u64,
}

/// What the caller of [`Cdr::from_call`] knows besides the state machine.
#[derive(Debug, Clone, Default)]
pub struct CdrContext {
    pub attempt_id: String,
    pub trace_id: String,
    pub call_id: String,
    pub trunk: String,
    pub node: String,
    pub caller_id: String,
    pub callee_masked: String,
    pub queued_at_ms: Option<u64>,
    pub dispatched_at_ms: Option<u64>,
    pub first_response_at_ms: Option<u64>,
    pub dtmf: String,
    pub recording: Option<String>,
    pub rtp_packets_sent: u64,
    pub rtp_packets_received: u64,
    pub rtp_packets_lost: u64,
}

impl Cdr {
    /// Builds the CDR of a finished (terminal) call, classifying its outcome.
    pub fn from_call(call: &Call, classifier: &Classifier, ctx: CdrContext) -> Cdr {
        let e = call.evidence();
        let end = call.end_at_ms;
        let duration_ms = match (call.invite_at_ms, end) {
            (Some(s), Some(t)) => t.saturating_sub(s),
            _ => 0,
        };
        let billsec = match (call.answer_at_ms, end) {
            (Some(a), Some(t)) => t.saturating_sub(a).div_ceil(1000),
            _ => 0,
        };
        let setup_ms = match (call.invite_at_ms, ctx.first_response_at_ms) {
            (Some(s), Some(r)) => Some(r.saturating_sub(s)),
            _ => None,
        };
        Cdr {
            attempt_id: ctx.attempt_id,
            trace_id: ctx.trace_id,
            call_id: ctx.call_id,
            trunk: ctx.trunk,
            node: ctx.node,
            caller_id: ctx.caller_id,
            callee: ctx.callee_masked,
            final_state: call.state(),
            outcome: classifier.classify(e),
            sip_status: e.final_status,
            q850_cause: e.q850_cause,
            queued_at_ms: ctx.queued_at_ms,
            dispatched_at_ms: ctx.dispatched_at_ms,
            invite_at_ms: call.invite_at_ms,
            ring_at_ms: call.ring_at_ms,
            early_media_at_ms: call.early_media_at_ms,
            answer_at_ms: call.answer_at_ms,
            end_at_ms: end,
            setup_ms,
            duration_ms,
            billsec,
            hangup_by: call.hangup_by,
            early_media: e.early_media,
            dtmf: ctx.dtmf,
            recording: ctx.recording,
            rtp_packets_sent: ctx.rtp_packets_sent,
            rtp_packets_received: ctx.rtp_packets_received,
            rtp_packets_lost: ctx.rtp_packets_lost,
        }
    }

    /// Where the attempt's time went, phase by phase (milliseconds; `None` for a phase the
    /// call did not reach or a time that was not recorded).
    pub fn breakdown(&self) -> Breakdown {
        let span = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        // Ringing ends at the answer, or at the end of a call that was never answered.
        let ring_end = self.answer_at_ms.or(self.end_at_ms);
        Breakdown {
            queue_wait_ms: span(self.queued_at_ms, self.dispatched_at_ms),
            dispatch_ms: span(self.dispatched_at_ms, self.invite_at_ms),
            sip_setup_ms: self.setup_ms,
            ring_ms: span(self.ring_at_ms, ring_end),
            talk_ms: span(self.answer_at_ms, self.end_at_ms),
            total_ms: span(self.queued_at_ms.or(self.invite_at_ms), self.end_at_ms),
        }
    }
}

/// An attempt's time by phase: waiting in the queue after its due time, from dispatch to the
/// INVITE, SIP setup (INVITE to the first response), ringing, talking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Breakdown {
    pub queue_wait_ms: Option<u64>,
    pub dispatch_ms: Option<u64>,
    pub sip_setup_ms: Option<u64>,
    pub ring_ms: Option<u64>,
    pub talk_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallEvent;

    #[test]
    fn answered_call_cdr_has_times_billsec_and_outcome() {
        let mut c = Call::new();
        c.apply(CallEvent::Dial, 10_000).unwrap();
        c.apply(CallEvent::Ringing { status: 180 }, 10_050).unwrap();
        c.apply(CallEvent::Answer { status: 200 }, 12_000).unwrap();
        c.apply(
            CallEvent::Hangup {
                by: HangupParty::Local,
                q850: None,
            },
            17_001,
        )
        .unwrap();
        let ctx = CdrContext {
            attempt_id: "a1".into(),
            callee_masked: "138****5678".into(),
            queued_at_ms: Some(9_000),
            dispatched_at_ms: Some(9_400),
            first_response_at_ms: Some(10_020),
            ..Default::default()
        };
        let cdr = Cdr::from_call(&c, &Classifier::default(), ctx);
        assert_eq!(
            cdr.breakdown(),
            Breakdown {
                queue_wait_ms: Some(400),
                dispatch_ms: Some(600),
                sip_setup_ms: Some(20),
                ring_ms: Some(1_950),
                talk_ms: Some(5_001),
                total_ms: Some(8_001),
            }
        );
        assert_eq!(cdr.outcome, Outcome::AnsweredHuman);
        assert_eq!(cdr.final_state, CallState::Completed);
        assert_eq!(cdr.sip_status, Some(200));
        assert_eq!(cdr.duration_ms, 7_001);
        assert_eq!(cdr.billsec, 6);
        assert_eq!(cdr.setup_ms, Some(20));
        assert_eq!(cdr.hangup_by, Some(HangupParty::Local));
        assert_eq!(cdr.callee, "138****5678");
    }

    #[test]
    fn busy_call_cdr_bills_nothing() {
        let mut c = Call::new();
        c.apply(CallEvent::Dial, 1).unwrap();
        c.apply(
            CallEvent::Rejected {
                status: 486,
                q850: Some(17),
            },
            51,
        )
        .unwrap();
        let cdr = Cdr::from_call(&c, &Classifier::default(), CdrContext::default());
        assert_eq!(cdr.outcome, Outcome::Busy);
        assert_eq!(
            (cdr.billsec, cdr.duration_ms, cdr.q850_cause),
            (0, 50, Some(17))
        );
    }
}
