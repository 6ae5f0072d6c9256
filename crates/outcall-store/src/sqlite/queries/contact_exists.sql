SELECT id
FROM contacts
WHERE id = ?1
