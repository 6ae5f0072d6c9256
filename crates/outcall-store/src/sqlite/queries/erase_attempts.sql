UPDATE attempts
SET number_hash = randomblob(32),
    cdr = CASE WHEN cdr IS NULL THEN NULL
               ELSE json_set(cdr, '$.callee', '[erased]', '$.recording', json('null')) END
WHERE number_hash = ?1
