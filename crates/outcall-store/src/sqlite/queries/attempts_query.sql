SELECT id, campaign_id, contact_id, seq, node, started_at, ended_at, outcome, cause, cdr
FROM attempts
WHERE id > ?1
  AND (?2 IS NULL OR campaign_id = ?2)
  AND (?3 IS NULL OR outcome = ?3)
  AND (?4 IS NULL OR number_hash = ?4)
  AND (?5 IS NULL OR started_at >= ?5)
  AND (?6 IS NULL OR started_at < ?6)
ORDER BY id
LIMIT ?7
