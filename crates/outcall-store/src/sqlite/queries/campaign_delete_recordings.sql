SELECT json_extract(cdr, '$.recording') AS recording
FROM attempts
WHERE campaign_id = ?1 AND cdr IS NOT NULL AND json_extract(cdr, '$.recording') IS NOT NULL
ORDER BY id
