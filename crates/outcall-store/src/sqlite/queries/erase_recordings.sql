SELECT json_extract(c.cdr, '$.recording') AS recording
FROM attempts a
JOIN cdrs c ON c.attempt_id = a.id
WHERE a.number_hash = ?1 AND json_extract(c.cdr, '$.recording') IS NOT NULL
