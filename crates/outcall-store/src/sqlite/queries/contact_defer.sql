UPDATE contacts
SET due_at = ?2
WHERE id = ?1 AND state = 'pending'
