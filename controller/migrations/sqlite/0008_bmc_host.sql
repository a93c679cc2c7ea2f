-- The host of a node's BMC (`ipmi_address`, else the host of `redfish_address`; an IP in
-- canonical form or a lower-case name; '' when the node has none), in an indexed column so
-- "which nodes use this BMC" never scans the nodes. Rows start NULL and the store fills them
-- from their documents when it opens (the canonical form is computed in Rust, one rule for
-- both dialects). postgres/0008_bmc_host.sql is the same.
ALTER TABLE nodes ADD COLUMN bmc_host TEXT;
CREATE INDEX nodes_bmc_host ON nodes (bmc_host);
