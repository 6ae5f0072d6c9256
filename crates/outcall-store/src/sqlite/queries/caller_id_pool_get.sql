SELECT name, description, numbers, created_at, updated_at
FROM caller_id_pools
WHERE name = ?1
