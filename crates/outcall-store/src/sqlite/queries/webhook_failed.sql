UPDATE webhook_outbox
SET tries = tries + 1, last_error = ?3, last_http_status = ?4,
    status = CASE WHEN ?5 IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = COALESCE(?5, next_attempt_at), updated_at = ?2
WHERE id = ?1 AND status = 'pending'
RETURNING status
