SELECT id FROM webhook_outbox WHERE event_id = ?1
