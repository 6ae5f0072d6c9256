SELECT request_hash, status, body FROM idempotency_keys WHERE scope = ? AND key = ?
