DELETE FROM webhook_outbox WHERE campaign_id = ?1 AND status = 'pending'
