-- The SMBIOS system UUID an agent lookup finds a node by (`properties.system_uuid`, else
-- `extra.system_uuid`, lower case), in an indexed column so a lookup never scans the nodes.
-- postgres/0003_system_uuid.sql is the same.
ALTER TABLE nodes ADD COLUMN system_uuid TEXT;
UPDATE nodes SET system_uuid = LOWER(COALESCE(
    json_extract(doc, '$.properties.system_uuid'),
    json_extract(doc, '$.extra.system_uuid')
));
CREATE INDEX nodes_system_uuid ON nodes (system_uuid) WHERE system_uuid IS NOT NULL;
