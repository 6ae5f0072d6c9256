SELECT json_extract(cdr, '$.recording') AS recording
FROM attempts
WHERE number_hash = ?1 AND cdr IS NOT NULL AND json_extract(cdr, '$.recording') IS NOT NULL
