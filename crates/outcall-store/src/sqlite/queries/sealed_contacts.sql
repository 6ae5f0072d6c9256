SELECT id, number_enc FROM contacts WHERE id > ?1 AND length(number_enc) > 0 ORDER BY id LIMIT ?2
