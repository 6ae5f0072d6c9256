SELECT (started_at / 3600000) * 3600000 AS hour,
       COALESCE(outcome, 'in_progress') AS outcome,
       COUNT(*) AS n
FROM attempts
WHERE campaign_id = ?
GROUP BY hour, outcome
ORDER BY hour
