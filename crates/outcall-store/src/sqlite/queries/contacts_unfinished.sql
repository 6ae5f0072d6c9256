SELECT COUNT(*) AS n
FROM contacts
WHERE campaign_id = ?1 AND state <> 'done'
