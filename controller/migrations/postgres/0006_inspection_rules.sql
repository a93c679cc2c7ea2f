-- Inspection rules the operator manages at /v1/inspection_rules (Ironic's shape, API 1.96);
-- PostgreSQL dialect; sqlite/0006_inspection_rules.sql is the same. `doc` holds the JSON of the
-- description, sensitive flag, conditions and actions. Timestamps are microseconds since
-- the Unix epoch.

CREATE TABLE inspection_rules (
    uuid TEXT COLLATE "C" PRIMARY KEY,
    priority BIGINT NOT NULL,
    phase TEXT COLLATE "C" NOT NULL,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT
);
