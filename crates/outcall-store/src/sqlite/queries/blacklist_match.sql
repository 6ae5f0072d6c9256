SELECT id, campaign_id, kind, number_hash, number_enc, prefix, label, reason, source, expires_at, created_at
FROM blacklist
WHERE (campaign_id IS NULL OR campaign_id = ?1)
  AND (expires_at IS NULL OR expires_at > ?4)
  AND (number_hash = ?2 OR (prefix IS NOT NULL AND substr(?3, 1, length(prefix)) = prefix))
ORDER BY id
LIMIT 1
