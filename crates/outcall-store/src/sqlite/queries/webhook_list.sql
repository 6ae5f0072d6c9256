SELECT id, event_id, campaign_id, attempt_id, event, url, payload, status, tries, last_error, last_http_status, created_at, next_attempt_at, delivered_at, updated_at
FROM webhook_outbox
WHERE (?1 IS NULL OR status = ?1)
  AND (?2 IS NULL OR campaign_id = ?2)
  AND id > ?3
ORDER BY id
LIMIT ?4
