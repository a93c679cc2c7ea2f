-- DHCP leases of full mode (PostgreSQL dialect; sqlite/0002_dhcp_leases.sql is the same).
-- `ip` is the IPv4 address as an integer. `state` is offered, bound, declined or reserved;
-- reserved rows belong to a port whose extra.dhcp_address names the address, never expire,
-- and go with their port. Timestamps are microseconds since the Unix epoch.

CREATE TABLE dhcp_leases (
    ip BIGINT PRIMARY KEY,
    mac TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    port_uuid TEXT COLLATE "C" REFERENCES ports (uuid) ON DELETE CASCADE
);
CREATE INDEX dhcp_leases_mac ON dhcp_leases (mac);
CREATE UNIQUE INDEX dhcp_leases_port ON dhcp_leases (port_uuid) WHERE port_uuid IS NOT NULL;
