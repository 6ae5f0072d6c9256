SELECT id, contact_id, campaign_id, seq, started_at, node
FROM attempts
WHERE state = 'dialing'
ORDER BY id
