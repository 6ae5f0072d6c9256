//! Who is calling, and what they did: authentication (passwords, session tokens, API keys),
//! users and keys, and the audit log with its retention.

use crate::auth::{self, Claims, Role, TokenSigner};
use crate::error::ApiError;
use axum::http::HeaderMap;
use jiff::Timestamp;
use outcall_store::access::{
    AuditQuery, AuditRecord, NewApiKey, NewAuditEntry, NewUser, UserRecord, UserUpdate,
};
use outcall_store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub use outcall_store::access::ApiKeyRecord;

/// The authenticated caller of a request (put in the request's extensions by the router).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Caller {
    /// `user:<name>` or `key:<id>`.
    pub actor: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<i64>,
    #[serde(skip)]
    pub ip: Option<String>,
    #[serde(skip)]
    pub request_id: Option<String>,
}

/// Settings of the access layer.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// How long a session token is valid.
    pub token_ttl: Duration,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// How long delivered and failed status webhook deliveries are kept.
    pub webhook_retention: Duration,
    /// How long system events (alerts, trunk degradation) are kept.
    pub event_retention: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            token_ttl: Duration::from_secs(12 * 3600),
            audit_retention: Duration::from_secs(183 * 86400),
            webhook_retention: Duration::from_secs(30 * 86400),
            event_retention: Duration::from_secs(90 * 86400),
        }
    }
}

/// Authentication, users, API keys and the audit log.
pub struct Access {
    pub store: Arc<dyn Store>,
    pub signer: TokenSigner,
    pub config: AccessConfig,
    /// Recent failed logins by (username, client address).
    failures:
        std::sync::Mutex<std::collections::HashMap<(String, String), Vec<std::time::Instant>>>,
}

/// Failed logins from one address for one username that make it wait.
pub const LOGIN_MAX_FAILURES: usize = 5;
/// The window those failures are counted in, and how long the wait lasts.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A session token as returned by a login.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: String,
    pub user: UserView,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            id: u.id,
            username: u.username,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at.to_string(),
            updated_at: u.updated_at.to_string(),
        }
    }
}

/// A user to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 12 characters.
    pub password: String,
    pub role: Role,
}

/// Changes to a user; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// An API key to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub role: Role,
}

/// A new API key: `key` is shown this once and never again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewApiKeyView {
    pub key: String,
    #[serde(flatten)]
    pub record: ApiKeyRecordView,
}

/// An API key as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecordView {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_by: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<ApiKeyRecord> for ApiKeyRecordView {
    fn from(k: ApiKeyRecord) -> Self {
        ApiKeyRecordView {
            id: k.id,
            name: k.name,
            role: k.role,
            created_by: k.created_by,
            created_at: k.created_at.to_string(),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
        }
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

impl Access {
    pub fn new(store: Arc<dyn Store>, signer: TokenSigner, config: AccessConfig) -> Access {
        Access {
            store,
            signer,
            config,
            failures: Default::default(),
        }
    }

    /// Seconds to wait before this username may try again from this address, if it must.
    fn throttled(&self, key: &(String, String)) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(key)?;
        list.retain(|t| t.elapsed() < LOGIN_WINDOW);
        if list.len() < LOGIN_MAX_FAILURES {
            return None;
        }
        let oldest = list.first()?;
        Some(
            LOGIN_WINDOW
                .saturating_sub(oldest.elapsed())
                .as_secs()
                .max(1),
        )
    }

    fn record_failure(&self, key: (String, String)) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, l| l.iter().any(|t| t.elapsed() < LOGIN_WINDOW));
        }
        map.entry(key).or_default().push(std::time::Instant::now());
    }

    /// The caller presenting `Authorization: Bearer <session token or API key>`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthenticated("no Authorization header".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("unreadable Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthenticated("use `Authorization: Bearer <token or API key>`".into())
            })?;
        if token.starts_with(auth::API_KEY_PREFIX) {
            let bad = || ApiError::Unauthenticated("unknown or revoked API key".into());
            let (id, hash) = auth::parse_api_key(token).ok_or_else(bad)?;
            let key = self.store.get_api_key(id).await?.ok_or_else(bad)?;
            if key.revoked_at.is_some() || !auth::constant_time_eq(&key.secret_hash, &hash) {
                return Err(bad());
            }
            let role = Role::parse(&key.role)
                .ok_or_else(|| ApiError::Internal(format!("api key {id}: unknown role")))?;
            return Ok(Caller {
                actor: format!("key:{id}"),
                role,
                user_id: None,
                api_key_id: Some(id),
                ip: None,
                request_id: None,
            });
        }
        let claims = self
            .signer
            .verify(token, now().as_second())
            .map_err(|e| ApiError::Unauthenticated(e.into()))?;
        // The user is read on every request: a disabled user or a changed role takes effect
        // at once, not when the token expires.
        let user = match self.store.get_user(claims.sub).await {
            Ok(u) => u,
            Err(outcall_store::StoreError::NotFound { .. }) => {
                return Err(ApiError::Unauthenticated(
                    "the user no longer exists".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if user.disabled || user.username != claims.name {
            return Err(ApiError::Unauthenticated("the user is disabled".into()));
        }
        let role = Role::parse(&user.role)
            .ok_or_else(|| ApiError::Internal(format!("user {}: unknown role", user.id)))?;
        Ok(Caller {
            actor: format!("user:{}", user.username),
            role,
            user_id: Some(user.id),
            api_key_id: None,
            ip: None,
            request_id: None,
        })
    }

    /// Checks a password and issues a session token. Every try is audited.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ip: Option<String>,
        request_id: Option<String>,
    ) -> Result<Session, ApiError> {
        let key = (
            username.to_lowercase(),
            ip.clone().unwrap_or_else(|| "unknown".into()),
        );
        if let Some(wait) = self.throttled(&key) {
            self.store
                .append_audit(&NewAuditEntry {
                    at: now(),
                    actor: format!("user:{}", username.chars().take(64).collect::<String>()),
                    action: "auth.login".into(),
                    outcome: "denied".into(),
                    detail: serde_json::json!({ "reason": "too many failed logins" }),
                    ip,
                    request_id,
                    ..Default::default()
                })
                .await?;
            return Err(ApiError::TooManyAttempts(wait));
        }
        let user = self.store.user_by_name(username).await?;
        let ok = match &user {
            Some(u) => auth::verify_password(password, &u.password_hash) && !u.disabled,
            None => {
                auth::dummy_password_check(password);
                false
            }
        };
        let mut entry = NewAuditEntry {
            at: now(),
            actor: format!("user:{}", username.chars().take(64).collect::<String>()),
            role: user.as_ref().map(|u| u.role.clone()),
            action: "auth.login".into(),
            target: None,
            outcome: if ok { "ok" } else { "denied" }.into(),
            detail: serde_json::json!({}),
            ip,
            request_id,
        };
        let Some(user) = user.filter(|_| ok) else {
            entry.detail = serde_json::json!({ "reason": "bad credentials or disabled user" });
            self.store.append_audit(&entry).await?;
            self.record_failure(key);
            return Err(ApiError::InvalidCredentials);
        };
        self.store.append_audit(&entry).await?;
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let iat = now().as_second();
        let exp = iat + self.config.token_ttl.as_secs() as i64;
        let token = self.signer.sign(&Claims {
            sub: user.id,
            name: user.username.clone(),
            iat,
            exp,
        });
        Ok(Session {
            token,
            token_type: "Bearer",
            expires_at: Timestamp::from_second(exp)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            user: user.into(),
        })
    }

    /// Appends to the audit log. A failure to audit is an internal error: the operation's
    /// caller learns that it was not recorded.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: Option<String>,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.store
            .append_audit(&NewAuditEntry {
                at: now(),
                actor: caller.actor.clone(),
                role: Some(caller.role.as_str().into()),
                action: action.into(),
                target,
                outcome: "ok".into(),
                detail,
                ip: caller.ip.clone(),
                request_id: caller.request_id.clone(),
            })
            .await?;
        Ok(())
    }

    /// Records a refused request (403).
    pub async fn audit_denied(&self, caller: &Caller, method: &str, path: &str) {
        let r = self
            .store
            .append_audit(&NewAuditEntry {
                at: now(),
                actor: caller.actor.clone(),
                role: Some(caller.role.as_str().into()),
                action: "access.denied".into(),
                target: Some(format!("{method} {path}")),
                outcome: "denied".into(),
                detail: serde_json::json!({}),
                ip: caller.ip.clone(),
                request_id: caller.request_id.clone(),
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot audit a refused request");
        }
    }

    pub async fn create_user(&self, by: &Caller, u: CreateUser) -> Result<UserView, ApiError> {
        if !valid_username(&u.username) {
            return Err(ApiError::InvalidRequest(
                "a username is 1 to 64 of letters, digits and . _ - @".into(),
            ));
        }
        auth::check_password_strength(&u.password).map_err(ApiError::InvalidRequest)?;
        let hash = auth::hash_password(&u.password).map_err(ApiError::Internal)?;
        let rec = self
            .store
            .create_user(
                &NewUser {
                    username: u.username.clone(),
                    password_hash: hash,
                    role: u.role.as_str().into(),
                },
                now(),
            )
            .await?;
        self.audit(
            by,
            "user.create",
            Some(format!("user:{}", rec.id)),
            serde_json::json!({ "username": rec.username, "role": rec.role }),
        )
        .await?;
        Ok(rec.into())
    }

    pub async fn list_users(&self) -> Result<Vec<UserView>, ApiError> {
        Ok(self
            .store
            .list_users()
            .await?
            .into_iter()
            .map(UserView::from)
            .collect())
    }

    pub async fn update_user(
        &self,
        by: &Caller,
        id: i64,
        p: PatchUser,
    ) -> Result<UserView, ApiError> {
        let before = self.store.get_user(id).await.map_err(|e| match e {
            outcall_store::StoreError::NotFound { .. } => {
                ApiError::NotFound(format!("user {id} not found"))
            }
            e => e.into(),
        })?;
        let demotes = p.role.is_some_and(|r| r != Role::Admin) || p.disabled == Some(true);
        if by.user_id == Some(id) && demotes {
            return Err(ApiError::Conflict(
                "you cannot disable yourself or take away your own admin role".into(),
            ));
        }
        if let Some(pw) = &p.password {
            auth::check_password_strength(pw).map_err(ApiError::InvalidRequest)?;
        }
        let update = UserUpdate {
            role: p.role.map(|r| r.as_str().to_string()),
            password_hash: match &p.password {
                Some(pw) => Some(auth::hash_password(pw).map_err(ApiError::Internal)?),
                None => None,
            },
            disabled: p.disabled,
        };
        let after = self.store.update_user(id, &update, now()).await?;
        let mut changes = serde_json::Map::new();
        if before.role != after.role {
            changes.insert(
                "role".into(),
                serde_json::json!({ "from": before.role, "to": after.role }),
            );
        }
        if before.disabled != after.disabled {
            changes.insert("disabled".into(), after.disabled.into());
        }
        if p.password.is_some() {
            changes.insert("password".into(), "changed".into());
        }
        let action = if before.role != after.role {
            "user.role_change"
        } else {
            "user.update"
        };
        self.audit(
            by,
            action,
            Some(format!("user:{id}")),
            serde_json::Value::Object(changes),
        )
        .await?;
        Ok(after.into())
    }

    pub async fn create_api_key(
        &self,
        by: &Caller,
        k: CreateApiKey,
    ) -> Result<NewApiKeyView, ApiError> {
        if k.name.trim().is_empty() || k.name.len() > 100 {
            return Err(ApiError::InvalidRequest(
                "an API key needs a name of 1 to 100 characters".into(),
            ));
        }
        let (secret, hash) = auth::new_api_key_secret();
        let rec = self
            .store
            .create_api_key(
                &NewApiKey {
                    name: k.name,
                    role: k.role.as_str().into(),
                    secret_hash: hash,
                    created_by: by.actor.clone(),
                },
                now(),
            )
            .await?;
        self.audit(
            by,
            "api_key.create",
            Some(format!("key:{}", rec.id)),
            serde_json::json!({ "name": rec.name, "role": rec.role }),
        )
        .await?;
        Ok(NewApiKeyView {
            key: auth::format_api_key(rec.id, &secret),
            record: rec.into(),
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecordView>, ApiError> {
        Ok(self
            .store
            .list_api_keys()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub async fn revoke_api_key(&self, by: &Caller, id: i64) -> Result<ApiKeyRecordView, ApiError> {
        let rec = self
            .store
            .revoke_api_key(id, now())
            .await
            .map_err(|e| match e {
                outcall_store::StoreError::NotFound { .. } => {
                    ApiError::NotFound(format!("api key {id} not found"))
                }
                e => e.into(),
            })?;
        self.audit(
            by,
            "api_key.revoke",
            Some(format!("key:{id}")),
            serde_json::json!({}),
        )
        .await?;
        Ok(rec.into())
    }

    pub async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, ApiError> {
        Ok(self.store.list_audit(q).await?)
    }

    /// Creates the first admin when there is no user at all. Returns whether it did.
    pub async fn bootstrap_admin(&self, username: &str, password: &str) -> Result<bool, ApiError> {
        if self.store.count_users().await? > 0 {
            return Ok(false);
        }
        if !valid_username(username) {
            return Err(ApiError::InvalidRequest(format!(
                "`{username}` is not a valid username"
            )));
        }
        auth::check_password_strength(password).map_err(ApiError::InvalidRequest)?;
        let hash = auth::hash_password(password).map_err(ApiError::Internal)?;
        let rec = self
            .store
            .create_user(
                &NewUser {
                    username: username.into(),
                    password_hash: hash,
                    role: Role::Admin.as_str().into(),
                },
                now(),
            )
            .await?;
        self.store
            .append_audit(&NewAuditEntry {
                at: now(),
                actor: "system".into(),
                role: None,
                action: "user.bootstrap".into(),
                target: Some(format!("user:{}", rec.id)),
                outcome: "ok".into(),
                detail: serde_json::json!({ "username": username, "role": "admin" }),
                ip: None,
                request_id: None,
            })
            .await?;
        Ok(true)
    }

    /// Deletes audit entries, finished webhook deliveries and idempotency keys past their
    /// retention; returns how many audit entries went.
    pub async fn purge(&self) -> Result<u64, ApiError> {
        let cut = |d: Duration| {
            now()
                .checked_sub(jiff::SignedDuration::try_from(d).unwrap_or_default())
                .unwrap_or(Timestamp::UNIX_EPOCH)
        };
        let n = self
            .store
            .purge_audit(cut(self.config.audit_retention))
            .await?;
        self.store
            .idempotency_purge(cut(Duration::from_secs(86400)))
            .await?;
        let webhooks = self
            .store
            .purge_webhooks(cut(self.config.webhook_retention))
            .await?;
        if webhooks > 0 {
            tracing::info!(deliveries = webhooks, "purged old webhook deliveries");
        }
        let events = self
            .store
            .purge_events(cut(self.config.event_retention))
            .await?;
        if events > 0 {
            tracing::info!(events, "purged old system events");
        }
        if n > 0 {
            self.store
                .append_audit(&NewAuditEntry {
                    at: now(),
                    actor: "system".into(),
                    action: "audit.purge".into(),
                    outcome: "ok".into(),
                    detail: serde_json::json!({ "deleted": n }),
                    ..Default::default()
                })
                .await?;
        }
        Ok(n)
    }

    /// Runs [`Access::purge`] every `every` until the returned task is aborted.
    pub fn spawn_purge(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.purge().await {
                    tracing::warn!(error = %e, "audit purge failed");
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// Reads a hex secret file, creating it (32 random bytes, mode 0600) if missing.
pub fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(path, &auth::random_secret_hex())?;
    }
    let text = std::fs::read_to_string(path)?;
    let text = text.trim();
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) if b.len() >= 32 => Ok(b),
        _ => Err(Error::new(
            ErrorKind::InvalidData,
            format!("{}: expected at least 64 hex digits", path.display()),
        )),
    }
}

pub use outcall_pool::vault::write_private;
