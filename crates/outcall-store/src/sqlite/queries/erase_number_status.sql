DELETE FROM number_status WHERE number_hash = ?1
