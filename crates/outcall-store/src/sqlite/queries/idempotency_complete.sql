UPDATE idempotency_keys SET status = ?, body = ? WHERE scope = ? AND key = ?
