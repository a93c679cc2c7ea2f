-- Indexes for large inventories (10,000 nodes and more): the list filters and sorts operators
-- and the conductor use most are read in index order instead of sorting every matching row
-- (SQLite dialect; postgres/0005_list_indexes.sql is the same). SQLite orders NULL first, so
-- one ascending index serves both `ASC NULLS FIRST` and `DESC NULLS LAST`, the order the
-- store asks for; every SQLite index ends in the rowid (`id`), so `nodes_provision_state`
-- already serves a state filter in `id` order.
CREATE INDEX nodes_state_name ON nodes (provision_state, name);
CREATE INDEX nodes_class_state ON nodes (resource_class, provision_state);
CREATE INDEX nodes_owner ON nodes (owner) WHERE owner IS NOT NULL;
CREATE INDEX nodes_lessee ON nodes (lessee) WHERE lessee IS NOT NULL;
CREATE INDEX nodes_created ON nodes (created_at, id);
CREATE INDEX nodes_updated ON nodes (updated_at, id);
