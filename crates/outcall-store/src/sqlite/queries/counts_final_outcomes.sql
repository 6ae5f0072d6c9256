SELECT final_outcome AS name, COUNT(*) AS n
FROM contacts
WHERE campaign_id = ?1 AND state = 'done' AND final_outcome IS NOT NULL
GROUP BY final_outcome
