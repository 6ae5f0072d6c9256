//! Number encryption at rest and blind indexing.
//!
//! Ciphertext layout: `[1 (format)] [key id] [12-byte nonce] [AES-256-GCM ciphertext + tag]`.
//! The blind index is HMAC-SHA256 of the E.164 number under a separate key. Keys come from
//! `OUTCALL_NUMBER_KEYS` (`index=HEX64;1=HEX64;2=HEX64;current=2`) or from a key file in the
//! same format, one `name=value` per line; the embedded mode creates that file (mode 0600)
//! with fresh random keys on first start.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;

const FORMAT: u8 = 1;

/// Vault errors.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("key material: {0}")]
    Keys(String),
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext was sealed with key {0}, which is not loaded")]
    UnknownKey(u8),
    #[error("ciphertext does not authenticate (wrong key or tampered)")]
    Authentication,
    #[error("cannot read or write the key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Encrypts, decrypts and indexes phone numbers.
pub struct NumberVault {
    keys: BTreeMap<u8, Aes256Gcm>,
    current: u8,
    index_key: [u8; 32],
}

impl std::fmt::Debug for NumberVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumberVault")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn hex32(s: &str) -> Result<[u8; 32], VaultError> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(VaultError::Keys("a key must be 64 hex characters".into()));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| VaultError::Keys("a key must be 64 hex characters".into()))?;
    }
    Ok(out)
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl NumberVault {
    /// A vault from raw keys: `keys` by id, `current` seals new ciphertext.
    pub fn new(
        keys: &[(u8, [u8; 32])],
        current: u8,
        index_key: [u8; 32],
    ) -> Result<Self, VaultError> {
        let mut map = BTreeMap::new();
        for (id, k) in keys {
            let cipher = Aes256Gcm::new_from_slice(k)
                .map_err(|_| VaultError::Keys("bad AES-256 key length".into()))?;
            map.insert(*id, cipher);
        }
        if !map.contains_key(&current) {
            return Err(VaultError::Keys(format!(
                "current key {current} is not among the keys"
            )));
        }
        Ok(NumberVault {
            keys: map,
            current,
            index_key,
        })
    }

    /// Parses `index=…;1=…;current=1` (separators `;` or newlines; `#` comments).
    pub fn parse(spec: &str) -> Result<Self, VaultError> {
        let mut index = None;
        let mut current = None;
        let mut keys = Vec::new();
        let parts = spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(';'))
            .map(str::trim);
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| VaultError::Keys(format!("`{}` is not name=value", redact(part))))?;
            match k.trim() {
                "index" => index = Some(hex32(v)?),
                "current" => {
                    current = Some(v.trim().parse::<u8>().map_err(|_| {
                        VaultError::Keys("current must be a key id from 1 to 255".into())
                    })?)
                }
                id => {
                    let id: u8 = id.parse().map_err(|_| {
                        VaultError::Keys(format!(
                            "unknown entry `{id}` (index, current or a key id)"
                        ))
                    })?;
                    keys.push((id, hex32(v)?));
                }
            }
        }
        let index = index.ok_or_else(|| VaultError::Keys("no index key".into()))?;
        let current = current
            .or_else(|| keys.iter().map(|k| k.0).max())
            .ok_or_else(|| VaultError::Keys("no encryption key".into()))?;
        NumberVault::new(&keys, current, index)
    }

    /// Loads `OUTCALL_NUMBER_KEYS` if set, else the key file, creating it with fresh keys if
    /// it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, VaultError> {
        if let Ok(spec) = std::env::var("OUTCALL_NUMBER_KEYS") {
            return NumberVault::parse(&spec);
        }
        let io = |source| VaultError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => NumberVault::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = format!(
                    "# Outcall number keys: keep secret, keep a backup; losing them loses every number.\nindex={}\n1={}\ncurrent=1\n",
                    to_hex(&rand::random::<[u8; 32]>()),
                    to_hex(&rand::random::<[u8; 32]>())
                );
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &text).map_err(io)?;
                NumberVault::parse(&text)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals a number with the current key.
    pub fn encrypt(&self, number: &str) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let cipher = &self.keys[&self.current];
        let ct = cipher
            .encrypt(&Nonce::from(nonce), number.as_bytes())
            .expect("aes-gcm encryption of a short plaintext cannot fail");
        let mut out = Vec::with_capacity(2 + 12 + ct.len());
        out.push(FORMAT);
        out.push(self.current);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a ciphertext sealed with any loaded key.
    pub fn decrypt(&self, blob: &[u8]) -> Result<String, VaultError> {
        if blob.len() < 2 + 12 + 16 || blob[0] != FORMAT {
            return Err(VaultError::Malformed);
        }
        let cipher = self
            .keys
            .get(&blob[1])
            .ok_or(VaultError::UnknownKey(blob[1]))?;
        let nonce: [u8; 12] = blob[2..14].try_into().map_err(|_| VaultError::Malformed)?;
        let pt = cipher
            .decrypt(&Nonce::from(nonce), &blob[14..])
            .map_err(|_| VaultError::Authentication)?;
        String::from_utf8(pt).map_err(|_| VaultError::Malformed)
    }

    /// The id of the key a ciphertext was sealed with.
    pub fn key_id(blob: &[u8]) -> Option<u8> {
        (blob.len() > 2 && blob[0] == FORMAT).then(|| blob[1])
    }

    /// The id of the key that seals new ciphertext.
    pub fn current_key(&self) -> u8 {
        self.current
    }

    /// HMAC-SHA256 blind index of a number (stable across key rotations).
    pub fn blind_index(&self, number: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.index_key).expect("hmac accepts any key length");
        mac.update(number.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

fn redact(s: &str) -> String {
    s.chars().take(12).collect::<String>() + "…"
}

/// Creates a file only its owner can read (mode 0600 on Unix) holding `text`; fails if it
/// exists. Used for every secret Outcall writes (keys, generated passwords, sessions).
#[cfg(unix)]
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// See the Unix version.
#[cfg(not(unix))]
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> NumberVault {
        NumberVault::new(&[(1, [7; 32]), (2, [9; 32])], 2, [3; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_no_plaintext_in_ciphertext() {
        let v = vault();
        let c = v.encrypt("+8613812345678");
        assert_eq!(NumberVault::key_id(&c), Some(2));
        assert!(!c.windows(11).any(|w| w == b"13812345678"));
        assert_eq!(v.decrypt(&c).unwrap(), "+8613812345678");
        assert_ne!(v.encrypt("+8613812345678"), c, "random nonce per seal");
    }

    #[test]
    fn rotation_keeps_old_ciphertext_readable() {
        let old = NumberVault::new(&[(1, [7; 32])], 1, [3; 32]).unwrap();
        let c1 = old.encrypt("+8613800138000");
        let new = vault();
        assert_eq!(new.decrypt(&c1).unwrap(), "+8613800138000");
        assert_eq!(
            old.blind_index("+8613800138000"),
            new.blind_index("+8613800138000")
        );
        let only_new = NumberVault::new(&[(2, [9; 32])], 2, [3; 32]).unwrap();
        assert!(matches!(
            only_new.decrypt(&c1),
            Err(VaultError::UnknownKey(1))
        ));
    }

    #[test]
    fn tampering_and_garbage_are_errors() {
        let v = vault();
        let mut c = v.encrypt("+8613812345678");
        let last = c.len() - 1;
        c[last] ^= 1;
        assert!(matches!(v.decrypt(&c), Err(VaultError::Authentication)));
        assert!(matches!(v.decrypt(b"short"), Err(VaultError::Malformed)));
    }

    #[test]
    fn blind_index_is_deterministic_and_keyed() {
        let v = vault();
        assert_eq!(v.blind_index("+86138"), v.blind_index("+86138"));
        assert_ne!(v.blind_index("+86138"), v.blind_index("+86139"));
        let other = NumberVault::new(&[(1, [7; 32])], 1, [4; 32]).unwrap();
        assert_ne!(v.blind_index("+86138"), other.blind_index("+86138"));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/number.keys");
        let a = NumberVault::load_or_create(&path).unwrap();
        let b = NumberVault::load_or_create(&path).unwrap();
        let c = a.encrypt("+8613812345678");
        assert_eq!(b.decrypt(&c).unwrap(), "+8613812345678");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = NumberVault::parse("index=zz").unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
        let k = "ab".repeat(32);
        let e = NumberVault::parse(&format!("index={k}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no encryption key"), "{e}");
        let e = NumberVault::parse(&format!("index={k};1={k};current=3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("current key 3"), "{e}");
        let e = NumberVault::parse(&format!("index={k};x={k}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown entry"), "{e}");
    }
}
