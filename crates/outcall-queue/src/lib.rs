//! Task queue with leases, global pacing limits, dialer registry and two-level cache.
