INSERT INTO audit_log (at, actor, role, action, target, outcome, detail, ip, request_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id
