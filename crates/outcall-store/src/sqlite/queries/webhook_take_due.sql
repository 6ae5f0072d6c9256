UPDATE webhook_outbox
SET next_attempt_at = ?2, updated_at = ?1
WHERE id IN (
    SELECT w.id
    FROM webhook_outbox w
    WHERE w.status = 'pending'
      AND w.next_attempt_at <= ?1
      AND NOT EXISTS (
          SELECT 1 FROM webhook_outbox p
          WHERE p.attempt_id = w.attempt_id AND p.status = 'pending' AND p.id < w.id
      )
    ORDER BY w.next_attempt_at, w.id
    LIMIT ?3
)
RETURNING id, event_id, campaign_id, attempt_id, event, url, payload, status, tries, last_error, last_http_status, created_at, next_attempt_at, delivered_at, updated_at
