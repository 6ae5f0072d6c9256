SELECT number_hash FROM number_status
WHERE status = ?1 AND updated_at >= ?2 AND number_hash > ?3
ORDER BY number_hash
LIMIT ?4
