SELECT name, description, numbers, created_at, updated_at
FROM caller_id_pools
ORDER BY name
