//! Roles, permissions and credentials: argon2id passwords, HS256 session tokens (JWT) and API
//! keys.
//!
//! Every route declares the one permission it needs in its OpenAPI annotation
//! (`security(("bearer" = ["campaigns:write"]))`); [`crate::http::router`] reads them back from
//! the generated document and refuses to build a router with a route that declares none. A
//! role is a fixed set of permissions ([`Role::allows`]); auditors hold only read permissions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A role. Stored and shown by its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: trunks, users, keys, global blacklist, erasure.
    Admin,
    /// Runs campaigns: creates them, imports contacts, reads results.
    Operator,
    /// Reads call records, recordings metadata and the audit log; changes nothing.
    Auditor,
    /// A human agent: places single calls and reads campaigns.
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role holds `p`.
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(
                p,
                P::TrunksWrite
                    | P::UsersManage
                    | P::ApiKeysManage
                    | P::KeysRotate
                    | P::NumbersErase
                    | P::NumbersUnmasked
                    | P::AuditRead
            ),
            Role::Auditor => matches!(
                p,
                P::Session
                    | P::CampaignsRead
                    | P::ContactsRead
                    | P::CdrsRead
                    | P::CdrsExport
                    | P::CallsRead
                    | P::RecordingsMetadata
                    | P::BlacklistRead
                    | P::TrunksRead
                    | P::ImportsRead
                    | P::WebhooksRead
                    | P::AuditRead
                    | P::MetricsRead
                    | P::EventsRead
            ),
            Role::Agent => matches!(
                p,
                P::Session | P::CampaignsRead | P::CallsCreate | P::CallsRead
            ),
        }
    }
}

macro_rules! permissions {
    ($($(#[$doc:meta])* $v:ident = $s:literal,)*) => {
        /// What a route needs. Shown in the OpenAPI document as the scope of its `bearer`
        /// security requirement.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission { $($(#[$doc])* $v,)* }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$v,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$v => $s,)* }
            }
            pub fn parse(s: &str) -> Option<Permission> {
                match s { $($s => Some(Permission::$v),)* _ => None }
            }
        }
    };
}

permissions! {
    /// Who am I.
    Session = "session",
    CampaignsRead = "campaigns:read",
    /// Create, change, start, pause, resume, cancel, delete.
    CampaignsWrite = "campaigns:write",
    /// Add and import contacts.
    ContactsWrite = "contacts:write",
    /// List a campaign's contacts (numbers masked).
    ContactsRead = "contacts:read",
    ImportsRead = "imports:read",
    CdrsRead = "cdrs:read",
    CdrsExport = "cdrs:export",
    /// Full phone numbers in call records (otherwise masked).
    NumbersUnmasked = "numbers:unmasked",
    NumbersErase = "numbers:erase",
    CallsCreate = "calls:create",
    CallsRead = "calls:read",
    RecordingsMetadata = "recordings:metadata",
    RecordingsDownload = "recordings:download",
    BlacklistRead = "blacklist:read",
    BlacklistWrite = "blacklist:write",
    TrunksRead = "trunks:read",
    TrunksWrite = "trunks:write",
    UsersManage = "users:manage",
    ApiKeysManage = "api_keys:manage",
    KeysRotate = "keys:rotate",
    AuditRead = "audit:read",
    WebhooksRead = "webhooks:read",
    WebhooksWrite = "webhooks:write",
    /// Prometheus metrics at `/metrics`.
    MetricsRead = "metrics:read",
    /// System events: trunks degraded or recovered, circuit breakers, alerts.
    EventsRead = "events:read",
}

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{phc::PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fixed-cost stand-in for [`verify_password`] when the user does not exist, so a login's
/// timing does not tell whether a name is taken.
pub fn dummy_password_check(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("not a password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

/// Rules for a password set through the API or the CLI.
pub fn check_password_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < 12 {
        return Err("a password needs at least 12 characters".into());
    }
    Ok(())
}

/// Claims of a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: i64,
    /// User name.
    pub name: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

type HmacSha256 = hmac::Hmac<Sha256>;

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs session tokens (JWT, HS256).
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// `secret` should be 32 random bytes or more.
    pub fn new(secret: &[u8]) -> Result<TokenSigner, String> {
        if secret.len() < 32 {
            return Err("the token secret needs at least 32 bytes".into());
        }
        Ok(TokenSigner {
            secret: secret.to_vec(),
        })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.secret).expect("any key size");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let input = format!("{}.{}", B64.encode(JWT_HEADER), B64.encode(payload));
        let sig = self.mac(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    /// The claims of a token signed by this signer that has not expired at `now` (Unix
    /// seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token");
        };
        let header = B64.decode(h).map_err(|_| "malformed token")?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| "malformed token")?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err("unsupported token algorithm");
        }
        let sig = B64.decode(s).map_err(|_| "malformed token")?;
        let expected = self.mac(format!("{h}.{p}").as_bytes());
        if !constant_time_eq(&sig, &expected) {
            return Err("bad token signature");
        }
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token")?;
        if claims.exp <= now {
            return Err("token expired");
        }
        Ok(claims)
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An API key's prefix: `oc_<id>_<secret>`.
pub const API_KEY_PREFIX: &str = "oc_";

/// A new key's secret part (32 random bytes, base64url) and its SHA-256 to store.
pub fn new_api_key_secret() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = B64.encode(raw);
    let hash = Sha256::digest(secret.as_bytes()).to_vec();
    (secret, hash)
}

/// The whole key as shown once to its creator.
pub fn format_api_key(id: i64, secret: &str) -> String {
    format!("{API_KEY_PREFIX}{id}_{secret}")
}

/// Splits a presented key into its id and the SHA-256 of its secret.
pub fn parse_api_key(key: &str) -> Option<(i64, Vec<u8>)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id = id.parse().ok()?;
    Some((id, Sha256::digest(secret.as_bytes()).to_vec()))
}

/// 32 random bytes, hex: a new secret for a key file.
pub fn random_secret_hex() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditors_never_change_anything() {
        for p in Permission::ALL {
            let s = p.as_str();
            let writes = s.ends_with(":write")
                || s.ends_with(":manage")
                || s.ends_with(":create")
                || matches!(
                    p,
                    Permission::NumbersErase
                        | Permission::KeysRotate
                        | Permission::NumbersUnmasked
                        | Permission::RecordingsDownload
                );
            if writes {
                assert!(!Role::Auditor.allows(*p), "auditor holds {s}");
            }
        }
        assert!(Role::Auditor.allows(Permission::AuditRead));
    }

    #[test]
    fn only_admins_see_full_numbers() {
        for r in Role::ALL {
            assert_eq!(
                r.allows(Permission::NumbersUnmasked),
                r == Role::Admin,
                "{r:?}"
            );
        }
    }

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tokens_verify_and_expire() {
        let s = TokenSigner::new(&[7; 32]).unwrap();
        let c = Claims {
            sub: 3,
            name: "ann".into(),
            iat: 100,
            exp: 200,
        };
        let t = s.sign(&c);
        assert_eq!(s.verify(&t, 150), Ok(c.clone()));
        assert_eq!(s.verify(&t, 200), Err("token expired"));
        let other = TokenSigner::new(&[8; 32]).unwrap();
        assert_eq!(other.verify(&t, 150), Err("bad token signature"));
        // A payload changed after signing (a role or expiry raised) fails.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = B64.encode(r#"{"sub":1,"name":"admin","iat":100,"exp":99999}"#);
        assert_eq!(s.verify(&parts.join("."), 150), Err("bad token signature"));
        // `alg: none` is refused.
        parts[0] = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            s.verify(&parts.join("."), 150),
            Err("unsupported token algorithm")
        );
        assert_eq!(s.verify("abc", 150), Err("malformed token"));
        assert!(TokenSigner::new(&[1; 16]).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert!(check_password_strength("short").is_err());
    }

    #[test]
    fn api_keys_parse() {
        let (secret, hash) = new_api_key_secret();
        let key = format_api_key(42, &secret);
        assert_eq!(parse_api_key(&key), Some((42, hash)));
        assert_eq!(parse_api_key("oc_x_abc"), None);
        assert_eq!(parse_api_key("Bearer"), None);
    }
}
