-- Agent sessions and their command queues, shared by every replica (PostgreSQL dialect;
-- sqlite/0007_agent_sessions.sql is the same). Token hashes are hex SHA-256, never tokens;
-- `body` is the command's JSON, sealed when secrets at rest are on. Timestamps are
-- microseconds since the Unix epoch. Both tables go with their node.

CREATE TABLE agent_sessions (
    node_uuid TEXT COLLATE "C" PRIMARY KEY REFERENCES nodes (uuid) ON DELETE CASCADE,
    token_hash TEXT COLLATE "C",
    previous_hash TEXT COLLATE "C",
    boot_window BIGINT NOT NULL DEFAULT 0,
    generation BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT
);

CREATE TABLE agent_commands (
    id TEXT COLLATE "C" PRIMARY KEY,
    node_uuid TEXT COLLATE "C" NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    session_hash TEXT COLLATE "C",
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX agent_commands_node ON agent_commands (node_uuid, state, seq);
