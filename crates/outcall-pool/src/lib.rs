//! The number pool: what Outcall knows about phone numbers, and how it keeps them secret.
//!
//! [`vault::NumberVault`] protects numbers at rest: each number is stored as AES-256-GCM
//! ciphertext that names the key that sealed it, and looked up through an HMAC-SHA256 blind
//! index, so the store can deduplicate and count calls per number without ever holding one in
//! clear.

pub mod attribution;
pub mod dedup;
pub mod number;
pub mod vault;

pub use vault::{NumberVault, VaultError};
