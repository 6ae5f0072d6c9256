DELETE FROM attempts WHERE campaign_id = ?1
