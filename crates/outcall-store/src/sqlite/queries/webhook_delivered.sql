UPDATE webhook_outbox
SET status = 'delivered', tries = tries + 1, delivered_at = ?2, last_http_status = ?3,
    last_error = NULL, updated_at = ?2
WHERE id = ?1 AND status = 'pending'
