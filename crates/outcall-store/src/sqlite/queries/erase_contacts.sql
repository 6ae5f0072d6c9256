UPDATE contacts
SET number_hash = randomblob(32),
    number_enc = x'',
    masked = '[erased]',
    variables = '{}',
    final_outcome = CASE WHEN state = 'done' THEN final_outcome ELSE 'blocked' END,
    state = 'done'
WHERE number_hash = ?1
