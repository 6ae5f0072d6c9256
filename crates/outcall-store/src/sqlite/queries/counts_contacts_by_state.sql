SELECT state AS name, COUNT(*) AS n
FROM contacts
WHERE campaign_id = ?1
GROUP BY state
