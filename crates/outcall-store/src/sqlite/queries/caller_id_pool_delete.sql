DELETE FROM caller_id_pools WHERE name = ?1
