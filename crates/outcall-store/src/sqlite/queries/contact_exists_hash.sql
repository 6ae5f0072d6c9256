SELECT 1 AS one FROM contacts WHERE campaign_id = ?1 AND number_hash = ?2 LIMIT 1
