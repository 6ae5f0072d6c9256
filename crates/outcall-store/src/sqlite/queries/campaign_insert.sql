INSERT INTO campaigns (name, status, spec, priority, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?5)
RETURNING id
