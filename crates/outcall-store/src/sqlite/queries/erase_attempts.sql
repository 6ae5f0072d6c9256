UPDATE attempts
SET number_hash = randomblob(32)
WHERE number_hash = ?1
