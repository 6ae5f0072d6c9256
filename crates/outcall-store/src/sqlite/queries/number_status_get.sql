SELECT status, last_outcome, attempts, answered, updated_at
FROM number_status WHERE number_hash = ?1 AND updated_at >= ?2
