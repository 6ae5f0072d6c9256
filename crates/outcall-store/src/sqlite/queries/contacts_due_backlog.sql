SELECT COUNT(*) AS n, MIN(c.due_at) AS oldest
FROM campaigns k
JOIN contacts c ON c.campaign_id = k.id AND c.state = 'pending' AND c.due_at <= ?1
WHERE k.status = 'running'
