SELECT state
FROM attempts
WHERE id = ?1
