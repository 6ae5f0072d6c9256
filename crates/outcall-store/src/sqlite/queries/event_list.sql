SELECT id, at, kind, subject, severity, message, details
FROM system_events
WHERE id > ?1
  AND (?2 IS NULL OR kind = ?2)
  AND (?3 IS NULL OR subject = ?3)
  AND (?4 IS NULL OR at >= ?4)
ORDER BY id
LIMIT ?5
