SELECT id, event_id, campaign_id, attempt_id, event, url, payload, status, tries, last_error, last_http_status, created_at, next_attempt_at, delivered_at, updated_at
FROM webhook_outbox
WHERE id = ?1
