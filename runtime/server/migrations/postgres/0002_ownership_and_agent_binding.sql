-- Every job records its submitter (NULL: submitted without credentials). Jobs stored before
-- this migration recorded one only when they carried secrets; the others count as anonymous.
ALTER TABLE jobs ADD COLUMN submitter TEXT;
UPDATE jobs SET submitter = client_id;

-- Agent credentials are bound to the agent names they may act as and the queues they may take
-- jobs from (JSON arrays of strings). Existing agent clients keep their own id as their only
-- agent name and are bound to no queue until an admin binds them.
ALTER TABLE clients ADD COLUMN agent_names TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN agent_queues TEXT NOT NULL DEFAULT '[]';
UPDATE clients SET agent_names = json_build_array(client_id)::text WHERE role = 'agent';
