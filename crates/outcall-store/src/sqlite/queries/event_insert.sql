INSERT INTO system_events (at, kind, subject, severity, message, details)
VALUES (?, ?, ?, ?, ?, ?)
RETURNING id
