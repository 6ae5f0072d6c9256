SELECT outcome, COUNT(*) AS n
FROM attempts
WHERE contact_id = ?1 AND state = 'finished'
GROUP BY outcome
