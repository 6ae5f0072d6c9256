SELECT outcome AS name, COUNT(*) AS n
FROM attempts
WHERE campaign_id = ?1 AND state = 'finished' AND outcome IS NOT NULL
GROUP BY outcome
