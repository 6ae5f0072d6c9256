//! Errors of the queue, the limiter, the registry and the cache.

/// An error, with a message an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or refused an operation. `url` has its password hidden.
    #[error("Redis at {url}: {message}")]
    Redis { url: String, message: String },
    /// Redis answered something this crate did not write (another program shares the
    /// namespace, or a different version of the scripts).
    #[error("Redis at {url}: unexpected data in {key}: {message}")]
    Corrupt {
        url: String,
        key: String,
        message: String,
    },
    /// A setting or an argument is out of range.
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, QueueError>;

/// `url` without its password (`redis://user:***@host:6379`), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
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

#[cfg(feature = "redis")]
pub(crate) fn redis_error(url: &str, doing: &str, e: &redis::RedisError) -> QueueError {
    use redis::{ErrorKind, ServerErrorKind};
    let hint = if e.is_connection_refusal() {
        "connection refused: check that Redis is running and that the URL names the right \
         host and port"
    } else if e.is_timeout() {
        "no answer in time: check the network to Redis and its load (SLOWLOG GET, INFO \
         commandstats)"
    } else if e.is_connection_dropped() || e.is_io_error() {
        "the connection was lost: check that Redis is up; the next call reconnects"
    } else {
        match e.kind() {
            ErrorKind::Server(ServerErrorKind::Moved)
            | ErrorKind::Server(ServerErrorKind::Ask)
            | ErrorKind::Server(ServerErrorKind::CrossSlot) => {
                "this is a Redis Cluster node: connect through a cluster-aware proxy; every \
                 script here touches a single slot"
            }
            ErrorKind::Server(ServerErrorKind::ReadOnly) => {
                "the server is a read-only replica: point the URL at the primary"
            }
            ErrorKind::Server(ServerErrorKind::NoPerm) => {
                "the Redis user lacks a permission (ACL): it needs EVALSHA, SCRIPT LOAD, \
                 sorted set, hash, string and PUBLISH/SUBSCRIBE commands"
            }
            ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                "Redis is loading its dataset: retry in a moment"
            }
            _ => {
                let detail = e.to_string();
                if detail.contains("NOAUTH") || detail.contains("WRONGPASS") {
                    "authentication failed: put the user and password in the URL \
                     (redis://user:password@host:6379)"
                } else if detail.contains("OOM") {
                    "Redis is out of memory (maxmemory reached): raise maxmemory or free \
                     space; the queue needs a noeviction policy"
                } else {
                    ""
                }
            }
        }
    };
    let message = if hint.is_empty() {
        format!("{doing}: {e}")
    } else {
        format!("{doing}: {hint} ({e})")
    };
    QueueError::Redis {
        url: url.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://app:s3cret@redis.internal:6379/2"),
            "redis://app:***@redis.internal:6379/2"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@redis.internal"),
            "rediss://:***@redis.internal"
        );
        assert_eq!(redact_url("redis://tok@h/0"), "redis://***@h/0");
    }
}
