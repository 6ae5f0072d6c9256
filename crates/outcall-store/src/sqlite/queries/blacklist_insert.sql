INSERT INTO blacklist (campaign_id, kind, number_hash, number_enc, prefix, label, reason, source, expires_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
