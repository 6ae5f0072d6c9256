DELETE FROM cdrs WHERE started_at < ?1
