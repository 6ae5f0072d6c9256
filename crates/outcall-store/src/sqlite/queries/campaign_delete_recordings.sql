SELECT json_extract(cdr, '$.recording') AS recording
FROM cdrs
WHERE campaign_id = ?1 AND json_extract(cdr, '$.recording') IS NOT NULL
ORDER BY attempt_id
