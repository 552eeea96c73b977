-- A `log` event refers to its fragment instead of carrying a copy of its text: each fragment is
-- stored once. Events stored before this migration keep their copy (log_seq NULL).
ALTER TABLE job_events ADD COLUMN log_seq BIGINT;
