INSERT INTO caller_id_pools (name, description, numbers, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (name) DO UPDATE
SET description = excluded.description, numbers = excluded.numbers, updated_at = excluded.updated_at
RETURNING name, description, numbers, created_at, updated_at
