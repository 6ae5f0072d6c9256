UPDATE blacklist SET number_enc = ?2 WHERE id = ?1
