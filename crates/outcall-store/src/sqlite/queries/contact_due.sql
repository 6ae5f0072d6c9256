SELECT id, campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state, province, city, carrier,
       due_at, attempts, last_outcome, final_outcome, trace_id
FROM contacts
WHERE campaign_id = ?1 AND state = 'pending' AND due_at <= ?2
ORDER BY priority DESC, due_at ASC, id ASC
LIMIT ?3
