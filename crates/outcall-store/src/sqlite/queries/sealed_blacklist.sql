SELECT id, number_enc FROM blacklist WHERE id > ?1 AND number_enc IS NOT NULL ORDER BY id LIMIT ?2
