SELECT id
FROM campaigns
WHERE json_extract(spec, '$.caller_id_pool') = ?1 AND status NOT IN ('completed', 'canceled')
ORDER BY id
