DELETE FROM system_events WHERE at < ?
