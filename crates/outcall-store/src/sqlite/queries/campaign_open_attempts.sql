SELECT COUNT(*) AS n
FROM attempts
WHERE campaign_id = ?1 AND state = 'dialing'
