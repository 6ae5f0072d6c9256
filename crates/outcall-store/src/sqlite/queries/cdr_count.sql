SELECT COUNT(*) AS n
FROM cdrs
WHERE (?1 IS NULL OR campaign_id = ?1)
