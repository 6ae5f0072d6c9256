UPDATE attempts
SET state = 'finished', ended_at = ?2, outcome = ?3, cause = ?4
WHERE id = ?1 AND state = 'dialing'
RETURNING contact_id, campaign_id, started_at
