UPDATE contacts
SET state = 'dialing', attempts = attempts + 1
WHERE id = ?1 AND state = 'pending'
RETURNING campaign_id, number_hash, attempts
