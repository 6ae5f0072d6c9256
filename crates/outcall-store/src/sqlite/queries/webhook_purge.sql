DELETE FROM webhook_outbox WHERE status <> 'pending' AND updated_at < ?1
