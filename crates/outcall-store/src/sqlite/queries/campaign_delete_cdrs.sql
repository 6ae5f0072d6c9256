DELETE FROM cdrs WHERE campaign_id = ?1
