INSERT INTO number_status (number_hash, status, last_outcome, attempts, answered, updated_at)
VALUES (?1, COALESCE(?2, 'unknown'), ?3, 1, ?4, ?5)
ON CONFLICT (number_hash) DO UPDATE SET
    status = COALESCE(?2, number_status.status),
    last_outcome = ?3,
    attempts = number_status.attempts + 1,
    answered = number_status.answered + ?4,
    updated_at = ?5
