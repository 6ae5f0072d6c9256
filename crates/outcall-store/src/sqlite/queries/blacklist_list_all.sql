SELECT id, campaign_id, kind, number_hash, number_enc, prefix, label, reason, source, expires_at, created_at
FROM blacklist ORDER BY id
