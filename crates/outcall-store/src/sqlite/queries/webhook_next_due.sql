SELECT MIN(w.next_attempt_at) AS due
FROM webhook_outbox w
WHERE w.status = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM webhook_outbox p
      WHERE p.attempt_id = w.attempt_id AND p.status = 'pending' AND p.id < w.id
  )
