SELECT id, campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state, province, city, carrier,
       due_at, attempts, last_outcome, final_outcome, trace_id
FROM contacts
WHERE id = ?1
