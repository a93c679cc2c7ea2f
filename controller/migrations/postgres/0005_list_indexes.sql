-- Indexes for large inventories (10,000 nodes and more): the list filters and sorts operators
-- and the conductor use most are read in index order instead of sorting every matching row
-- (PostgreSQL dialect; sqlite/0005_list_indexes.sql is the same). The store sorts
-- `ASC NULLS FIRST` / `DESC NULLS LAST` (NULL is the smallest value, as in Ironic's
-- databases), so the sorted columns are indexed `NULLS FIRST`: a forward scan serves one
-- direction and a backward scan the other. A state filter in `id` order (the default) gets
-- its own index in place of `provision_state` alone.
DROP INDEX nodes_provision_state;
CREATE INDEX nodes_state_id ON nodes (provision_state, id);
CREATE INDEX nodes_state_name ON nodes (provision_state, name NULLS FIRST, id);
CREATE INDEX nodes_class_state ON nodes (resource_class, provision_state);
CREATE INDEX nodes_owner ON nodes (owner) WHERE owner IS NOT NULL;
CREATE INDEX nodes_lessee ON nodes (lessee) WHERE lessee IS NOT NULL;
CREATE INDEX nodes_created ON nodes (created_at NULLS FIRST, id);
CREATE INDEX nodes_updated ON nodes (updated_at NULLS FIRST, id);
