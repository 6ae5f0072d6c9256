UPDATE webhook_outbox
SET status = 'pending', tries = 0, next_attempt_at = ?2, updated_at = ?2
WHERE id = ?1 AND status = 'failed'
RETURNING id, event_id, campaign_id, attempt_id, event, url, payload, status, tries, last_error, last_http_status, created_at, next_attempt_at, delivered_at, updated_at
