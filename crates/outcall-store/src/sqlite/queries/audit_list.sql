SELECT id, at, actor, role, action, target, outcome, detail, ip, request_id
FROM audit_log
WHERE id > ?1
  AND (?2 IS NULL OR actor = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR at >= ?4)
  AND (?5 IS NULL OR at < ?5)
ORDER BY id
LIMIT ?6
