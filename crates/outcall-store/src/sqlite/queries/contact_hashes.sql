SELECT id, number_hash FROM contacts WHERE campaign_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3
