UPDATE contacts
SET state = 'done', final_outcome = ?2, last_outcome = ?3
WHERE id = ?1
