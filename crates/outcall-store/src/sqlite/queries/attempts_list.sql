SELECT a.id, a.campaign_id, a.contact_id, a.seq, a.node, a.started_at, a.ended_at, a.outcome,
       a.cause, c.cdr
FROM attempts a
LEFT JOIN cdrs c ON c.attempt_id = a.id
WHERE a.campaign_id = ?1 AND a.id > ?2
ORDER BY a.id
LIMIT ?3
