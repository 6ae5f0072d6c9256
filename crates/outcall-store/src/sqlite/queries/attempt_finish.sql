UPDATE attempts
SET state = 'finished', ended_at = ?2, outcome = ?3, cause = ?4, sip_status = ?5, cdr = ?6
WHERE id = ?1 AND state = 'dialing'
RETURNING contact_id
