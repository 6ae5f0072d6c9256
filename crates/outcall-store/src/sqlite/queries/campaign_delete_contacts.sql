DELETE FROM contacts WHERE campaign_id = ?1
