-- The trace id a contact's calls carry: a single call placed by an API request keeps the
-- request's trace id through dispatch, SIP, media and its CDR.
ALTER TABLE contacts ADD COLUMN trace_id TEXT;
