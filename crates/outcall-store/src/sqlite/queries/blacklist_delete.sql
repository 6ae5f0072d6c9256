DELETE FROM blacklist WHERE id = ?1
