//! The call engine interface the rest of Outcall dials through.

use crate::config::TrunkConfig;
use outcall_domain::call::Transition;
use outcall_domain::dtmf::DtmfRules;
use outcall_domain::Cdr;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// A prompt already converted to 8 kHz mono linear PCM (shared by every call that plays it).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    pub samples: Arc<Vec<i16>>,
}

impl Prompt {
    /// Loads and converts a WAV file.
    pub fn load(path: &std::path::Path) -> Result<Prompt, outcall_media::MediaError> {
        let samples = outcall_media::wav::load_prompt(path)?;
        Ok(Prompt {
            name: path.display().to_string(),
            samples: Arc::new(samples),
        })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.samples.len() as u64 / 8)
    }
}

/// What to do once the call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterPrompt {
    /// Hang up when the prompt has played (default).
    #[default]
    Hangup,
    /// Stay on the line until the callee hangs up, a DTMF rule fires or max duration.
    Stay,
}

/// One call to place.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub attempt_id: String,
    pub trace_id: String,
    /// Number to dial (E.164 or national digits), as the trunk expects it.
    pub to: String,
    pub trunk: Arc<TrunkConfig>,
    /// Caller ID to present; `None` takes the next one from the trunk's pool.
    pub caller_id: Option<String>,
    pub prompt: Option<Prompt>,
    pub after_prompt: AfterPrompt,
    pub dtmf: DtmfRules,
    /// Ring timeout: CANCEL after this long without an answer.
    pub ring_timeout: Duration,
    /// Hard limit on talk time: BYE when reached.
    pub max_duration: Duration,
    /// Record both directions to this WAV file.
    pub record_to: Option<PathBuf>,
    /// Open RTP at all (false: signalling only, for benchmarks).
    pub media: bool,
    /// Extra headers for this call only.
    pub headers: Vec<(String, String)>,
    /// When the attempt was queued (ms since epoch), for the CDR.
    pub queued_at_ms: Option<u64>,
    /// When the scheduler dispatched the attempt (ms since epoch), for the CDR.
    pub dispatched_at_ms: Option<u64>,
    /// The `campaign` label of the call's metrics (bounded: see `Campaign::metric_label`).
    pub campaign_label: Option<String>,
    /// The campaign the attempt belongs to (0: none), for nodes that place calls for others.
    pub campaign_id: i64,
    /// Cancelled: CANCEL or BYE the call now (operator, shutdown).
    pub cancel: CancellationToken,
}

impl CallRequest {
    pub fn new(
        attempt_id: impl Into<String>,
        to: impl Into<String>,
        trunk: Arc<TrunkConfig>,
    ) -> Self {
        let attempt_id = attempt_id.into();
        CallRequest {
            trace_id: attempt_id.clone(),
            attempt_id,
            to: to.into(),
            trunk,
            caller_id: None,
            prompt: None,
            after_prompt: AfterPrompt::Hangup,
            dtmf: DtmfRules::default(),
            ring_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(300),
            record_to: None,
            media: true,
            headers: Vec::new(),
            queued_at_ms: None,
            dispatched_at_ms: None,
            campaign_label: None,
            campaign_id: 0,
            cancel: CancellationToken::new(),
        }
    }
}

/// Live news about a call, for CLIs and event publishers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallUpdate {
    Transition(Transition),
    Dtmf { digit: char, at_ms: u64 },
}

/// The end of a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallReport {
    pub transitions: Vec<Transition>,
    pub cdr: Cdr,
    /// Why our side ended the call without its real outcome being known, when it did
    /// (`node_lost`: the dialer node carrying it went away; `no_dialer`: none could take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Places calls. Implemented on a SIP stack by [`crate::SipUserAgent`].
pub trait CallEngine: Send + Sync {
    /// Places one call and resolves when it has ended, always with a CDR.
    fn place_call(
        &self,
        req: CallRequest,
        updates: Option<UnboundedSender<CallUpdate>>,
    ) -> BoxFuture<'_, CallReport>;
}
