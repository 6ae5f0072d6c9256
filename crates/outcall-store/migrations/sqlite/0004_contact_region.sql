-- Attribution of each contact's number (号码归属地): province, city and original carrier.
ALTER TABLE contacts ADD COLUMN province TEXT NULL;
ALTER TABLE contacts ADD COLUMN city TEXT NULL;
ALTER TABLE contacts ADD COLUMN carrier TEXT NULL;
CREATE INDEX contacts_by_province ON contacts (campaign_id, province);
