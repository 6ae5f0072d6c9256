DELETE FROM blacklist WHERE campaign_id = ?1
