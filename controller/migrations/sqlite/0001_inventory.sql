-- Inventory tables (SQLite dialect; postgres/0001_inventory.sql is the same schema).
-- Each record is a JSON document in `doc`; the other columns mirror the fields that are
-- filtered, sorted, unique or changed atomically, and are kept in step with `doc` on every
-- write. Timestamps are microseconds since the Unix epoch.

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT UNIQUE,
    description TEXT,
    driver TEXT NOT NULL,
    provision_state TEXT NOT NULL,
    target_provision_state TEXT,
    power_state TEXT,
    resource_class TEXT,
    maintenance BOOLEAN NOT NULL,
    fault TEXT,
    retired BOOLEAN NOT NULL,
    instance_uuid TEXT UNIQUE,
    instance_name TEXT,
    allocation_uuid TEXT,
    owner TEXT,
    lessee TEXT,
    conductor_group TEXT NOT NULL,
    shard TEXT,
    chassis_uuid TEXT,
    parent_node TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT,
    provision_updated_at BIGINT,
    revision BIGINT NOT NULL,
    doc TEXT NOT NULL,
    reservation TEXT
);
CREATE INDEX nodes_provision_state ON nodes (provision_state);
CREATE INDEX nodes_reservation ON nodes (reservation) WHERE reservation IS NOT NULL;

CREATE TABLE ports (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    address TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE INDEX ports_node_uuid ON ports (node_uuid);

CREATE TABLE allocations (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT UNIQUE,
    node_uuid TEXT,
    state TEXT NOT NULL,
    resource_class TEXT,
    owner TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX allocations_node_uuid ON allocations (node_uuid);

CREATE TABLE node_history (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX node_history_node ON node_history (node_uuid, created_at, id);

CREATE TABLE node_inventory (
    node_uuid TEXT PRIMARY KEY REFERENCES nodes (uuid) ON DELETE CASCADE,
    doc TEXT NOT NULL
);
