SELECT id, campaign_id, contact_id, seq, node, started_at, ended_at, outcome, cause, cdr
FROM attempts
WHERE campaign_id = ?1 AND id > ?2
ORDER BY id
LIMIT ?3
