INSERT INTO contacts
    (campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state, due_at, attempts)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, 0)
ON CONFLICT (campaign_id, number_hash) DO NOTHING
