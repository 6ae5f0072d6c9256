INSERT INTO contacts
    (campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state, due_at, attempts,
     province, city, carrier, trace_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, 0, ?9, ?10, ?11, ?12)
ON CONFLICT (campaign_id, number_hash) DO NOTHING
