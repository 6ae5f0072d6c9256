//! The words of Outcall, without I/O.
//!
//! Every other crate speaks in these types. A dial of one contact is an *attempt*; while the
//! attempt is on the wire it is a [`call::Call`], a finite state machine driven by typed
//! [`call::CallEvent`]s. When the call ends, the evidence gathered on the way (final SIP status,
//! `Reason: Q.850` cause, whether early media or ringing was seen, whether we cancelled) is
//! turned into an [`outcome::Outcome`] by a table-driven [`classify::Classifier`], and the
//! attempt is written down as a [`cdr::Cdr`].
//!
//! Nothing here touches a socket, a clock or a file: time is passed in as milliseconds since
//! the Unix epoch, so the state machine and the classifier are tested exhaustively and fuzzed.

pub mod call;
pub mod campaign;
pub mod cdr;
pub mod classify;
pub mod dtmf;
pub mod mask;
pub mod metrics;
pub mod number;
pub mod outcome;
pub mod reason;
pub mod window;

pub use call::{Call, CallEvent, CallState, HangupParty, TransitionError};
pub use cdr::Cdr;
pub use classify::{Classifier, Evidence, LocalEnd};
pub use mask::mask_number;
pub use outcome::Outcome;
pub use reason::{parse_reason_header, ReasonValue};
