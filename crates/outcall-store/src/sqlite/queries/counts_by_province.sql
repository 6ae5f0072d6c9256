SELECT COALESCE(province, 'unknown') AS name, COUNT(*) AS n
FROM contacts WHERE campaign_id = ?1 GROUP BY COALESCE(province, 'unknown')
