SELECT COUNT(*) AS n
FROM attempts
WHERE number_hash = ?1 AND started_at >= ?2
