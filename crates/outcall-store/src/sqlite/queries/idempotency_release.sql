DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status = 0
