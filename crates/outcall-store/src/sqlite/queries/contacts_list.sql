SELECT id, campaign_id, number_hash, number_enc, masked, time_zone, priority, variables, state, province, city, carrier,
       due_at, attempts, last_outcome, final_outcome
FROM contacts
WHERE campaign_id = ?1 AND id > ?2 AND (?3 IS NULL OR state = ?3)
ORDER BY id
LIMIT ?4
