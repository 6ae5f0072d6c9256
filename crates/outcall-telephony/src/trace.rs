//! Trace ids: W3C trace context ids (32 lowercase hex digits) that follow a call from the API
//! request or the scheduler through dispatch, SIP, media and the CDR.
//!
//! The id is a plain string everywhere (log fields, the CDR, the attempt record). When an
//! OpenTelemetry exporter is configured, the composition root installs a [`set_link_hook`]
//! that makes the span opening a trace (the API request, the scheduler's attempt) a child of
//! that id, so exported spans carry the same trace id as the CDR.

use std::sync::OnceLock;

/// A new random trace id.
pub fn new_trace_id() -> String {
    loop {
        let v = rand::random::<u128>();
        if v != 0 {
            return format!("{v:032x}");
        }
    }
}

/// Whether `s` is a valid trace id (32 lowercase hex digits, not all zero).
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`), if valid.
pub fn parse_traceparent(h: &str) -> Option<String> {
    let mut parts = h.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let trace = trace.to_ascii_lowercase();
    is_trace_id(&trace).then_some(trace)
}

type LinkHook = fn(&tracing::Span, &str);

static LINK: OnceLock<LinkHook> = OnceLock::new();

/// Installs the function that attaches a span to a trace id (once per process).
pub fn set_link_hook(f: LinkHook) {
    let _ = LINK.set(f);
}

/// Makes `span` part of the trace `trace_id` for exporters (no-op without a hook).
pub fn link(span: &tracing::Span, trace_id: &str) {
    if let Some(f) = LINK.get() {
        if is_trace_id(trace_id) {
            f(span, trace_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert!(is_trace_id(&a) && is_trace_id(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn traceparent_is_parsed_strictly() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
