//! The `monitor` role of Outcall: alert rules evaluated over the Prometheus metrics that Outcall
//! nodes expose, and notifications to operators.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`runner`] samples a [`runner::MetricsSource`] every `interval_secs` (the local exporter
//!   through [`runner::FnSource`], or the `/metrics` of several nodes through
//!   [`runner::HttpSource`], whose samples are summed);
//! - [`expo`] parses the Prometheus text exposition format into samples, and a
//!   [`expo::Snapshot`] keys them by name and labels;
//! - [`engine`] keeps a time-ordered ring of snapshots long enough for the longest rule window,
//!   computes each rule's value per subject (per trunk for `trunk_down`) from counter deltas,
//!   and runs a per (rule, subject) state machine (inactive, pending, firing) that emits a
//!   [`Transition`] once on firing and once on resolve; the engine never reads the clock, so
//!   tests drive it with synthetic snapshots;
//! - [`notify`] sends transitions to webhooks (Alertmanager-compatible JSON, WeCom and DingTalk
//!   robots) and by mail (SMTP);
//! - [`config`] is the TOML configuration with every field defaulted: with no `[[rules]]` the
//!   five built-in rules apply.
//!
//! The metric names come from [`outcall_domain::metrics`].

pub mod config;
pub mod engine;
pub mod expo;
pub mod notify;
pub mod runner;

pub use config::{ConfigError, MonitorConfig, RuleKind, Severity};
pub use engine::{AlertState, Engine, Transition};
pub use runner::{FnSource, HttpSource, MetricsSource, Monitor, MonitorHandle, TransitionSink};
