INSERT INTO cdrs (attempt_id, campaign_id, started_at, outcome, sip_status, cdr)
SELECT ?1,
       COALESCE((SELECT campaign_id FROM attempts WHERE id = ?1), ?2),
       COALESCE((SELECT started_at FROM attempts WHERE id = ?1), ?3),
       ?4, ?5, ?6
WHERE true
ON CONFLICT (attempt_id) DO NOTHING
