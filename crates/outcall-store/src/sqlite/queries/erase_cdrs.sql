UPDATE cdrs
SET cdr = json_set(cdr, '$.callee', '[erased]', '$.recording', json('null'))
WHERE attempt_id IN (SELECT id FROM attempts WHERE number_hash = ?1)
