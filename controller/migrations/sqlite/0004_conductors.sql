-- Every `ingot serve` registers itself here and heartbeats (`updated_at`); /v1/conductors
-- reads it, and a replica whose heartbeat is older than heartbeat_timeout is offline
-- (SQLite dialect; postgres/0004_conductors.sql is the same). `doc` holds the JSON of the
-- drivers, listen addresses and version. Timestamps are microseconds since the Unix epoch.

CREATE TABLE conductors (
    hostname TEXT PRIMARY KEY,
    conductor_group TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL,
    online BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
