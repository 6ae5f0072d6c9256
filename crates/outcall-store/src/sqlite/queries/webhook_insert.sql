INSERT INTO webhook_outbox
    (event_id, campaign_id, attempt_id, event, url, payload, status, tries, created_at,
     next_attempt_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?7)
ON CONFLICT (event_id) DO NOTHING
RETURNING id
