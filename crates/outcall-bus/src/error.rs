//! Errors of the buses, the spool and the ingest consumer.

/// An error, with a message an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached, refused an operation or did not confirm in time.
    /// `url` has its password hidden.
    #[error("{broker} at {url}: {message}")]
    Broker {
        /// `RabbitMQ`, `NATS` or `in-process bus`.
        broker: &'static str,
        /// The broker's URL, password hidden.
        url: String,
        /// What failed and what to check.
        message: String,
    },
    /// The on-disk spool could not be written or read.
    #[error("spool {path}: {message}")]
    Spool {
        /// The spool directory or segment file.
        path: String,
        /// What failed and what to check.
        message: String,
    },
    /// A setting or an argument is out of range.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The setting or argument.
        what: &'static str,
        /// Why it is refused.
        message: String,
    },
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, BusError>;

/// `url` without its password (`amqp://user:***@host:5672/%2f`), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let hidden = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_string(),
    };
    format!("{}{}{}", &url[..scheme_end], hidden, &rest[at..])
}

/// A hint for an I/O-level failure text, shared by both brokers.
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
pub(crate) fn network_hint(broker: &str, detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("refused") {
        format!(
            "connection refused: check that {broker} is running and that the URL names the \
             right host and port"
        )
    } else if lower.contains("timed out") || lower.contains("timeout") {
        format!("no answer in time: check the network to {broker} and its load")
    } else if lower.contains("auth") || lower.contains("access_refused") || lower.contains("403") {
        format!(
            "authentication failed: check the user and password in the URL and the user's \
             permissions on {broker}"
        )
    } else if lower.contains("dns") || lower.contains("resolve") || lower.contains("lookup") {
        "the host name does not resolve: check the URL".to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
