SELECT MIN(due_at) AS due_at
FROM contacts
WHERE campaign_id = ?1 AND state = 'pending'
