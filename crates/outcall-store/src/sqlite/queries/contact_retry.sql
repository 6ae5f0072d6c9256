UPDATE contacts
SET state = 'pending', due_at = ?2, last_outcome = ?3
WHERE id = ?1
