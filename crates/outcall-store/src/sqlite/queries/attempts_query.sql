SELECT a.id, a.campaign_id, a.contact_id, a.seq, a.node, a.started_at, a.ended_at, a.outcome,
       a.cause, c.cdr
FROM attempts a
LEFT JOIN cdrs c ON c.attempt_id = a.id
WHERE a.id > ?1
  AND (?2 IS NULL OR a.campaign_id = ?2)
  AND (?3 IS NULL OR a.outcome = ?3)
  AND (?4 IS NULL OR a.number_hash = ?4)
  AND (?5 IS NULL OR a.started_at >= ?5)
  AND (?6 IS NULL OR a.started_at < ?6)
ORDER BY a.id
LIMIT ?7
