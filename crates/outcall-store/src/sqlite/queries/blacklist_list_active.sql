SELECT id, campaign_id, kind, number_hash, number_enc, prefix, label, reason, source, expires_at, created_at
FROM blacklist
WHERE (campaign_id IS NULL OR campaign_id = ?1) AND (expires_at IS NULL OR expires_at > ?2)
ORDER BY id
