-- Deploy templates the operator manages at /v1/deploy_templates (Ironic's shape, API 1.55);
-- sqlite dialect; postgres/0009_deploy_templates.sql is the same. `name` is a trait name, unique;
-- `doc` holds the JSON of the steps and extra. Timestamps are microseconds since the Unix
-- epoch; `id` is creation order (the API's default sort).
CREATE TABLE deploy_templates (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT
);
