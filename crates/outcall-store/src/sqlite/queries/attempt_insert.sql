INSERT INTO attempts (campaign_id, contact_id, number_hash, seq, node, state, started_at)
VALUES (?1, ?2, ?3, ?4, ?5, 'dialing', ?6)
RETURNING id
