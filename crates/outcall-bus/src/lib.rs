//! Event bus for call events and CDRs, and the ingest consumer.
