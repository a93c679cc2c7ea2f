#!/usr/bin/env python3
"""The core operator flow through openstacksdk's baremetal proxy.

Connects with `openstack.connect(auth_type='none', baremetal_endpoint_override=URL)`,
URL taken from OS_ENDPOINT (http:// or https://; OS_CACERT is the CA to trust), or with
`auth_type='http_basic'` when OS_AUTH_TYPE says so. Set CLIENTS_PEER=ironic when the server
is real Ironic.
The last line printed is `N passed, M failed`.
"""

import importlib.metadata
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Checker, cacert, endpoint, http_basic, peer_is_ironic, wait_until  # noqa: E402

import openstack  # noqa: E402
from openstack import exceptions  # noqa: E402

NAME = "sdk1"
MAC = "52:54:00:5d:00:01"
CONFIG_DRIVE = {
    "meta_data": {"hostname": "sdk1.example", "public_keys": {"0": "ssh-ed25519 AAAATEST sdk"}},
    "user_data": "#cloud-config\n",
}

C = Checker()


def main():
    print(f"openstacksdk {importlib.metadata.version('openstacksdk')}; endpoint {endpoint()}; "
          f"peer {'ironic' if peer_is_ironic() else 'ingot'}")
    started = time.monotonic()
    creds = http_basic()
    tls = {"cacert": cacert()} if cacert() else {}
    if creds is None:
        conn = openstack.connect(auth_type="none", baremetal_endpoint_override=endpoint(), **tls)
    else:
        conn = openstack.connect(
            auth_type="http_basic",
            auth={"username": creds[0], "password": creds[1], "endpoint": endpoint()},
            baremetal_endpoint_override=endpoint(),
            **tls,
        )
    bm = conn.baremetal
    ids = {}

    with C.step("create"):
        node = bm.create_node(driver="fake-hardware", name=NAME, resource_class="baremetal",
                              properties={"cpus": 4, "memory_mb": 8192, "local_gb": 50, "cpu_arch": "x86_64"})
        ids["node"] = node.id
        C.ok("node has a uuid", isinstance(node.id, str) and len(node.id) == 36, node)
        C.eq("name", node.name, NAME)
        C.eq("provision_state", node.provision_state, "enroll")
        C.eq("properties.cpus", node.properties.get("cpus"), 4)
        port = bm.create_port(address=MAC, node_uuid=node.id)
        ids["port"] = port.id
        C.eq("port address", port.address, MAC)
        C.eq("port node_id", port.node_id, node.id)

    with C.step("list and get"):
        names = [n.name for n in bm.nodes()]
        C.ok("nodes() has sdk1", NAME in names, names)
        enrolled = list(bm.nodes(details=True, provision_state="enroll"))
        C.ok("nodes(details, enroll) has sdk1 with its driver",
             any(n.name == NAME and n.driver == "fake-hardware" for n in enrolled), enrolled)
        paged = list(bm.nodes(limit=1))
        C.ok("nodes(limit=1) follows next to every node", NAME in [n.name for n in paged], paged)
        got = bm.get_node(NAME)
        C.eq("get_node by name", got.id, ids["node"])
        ports = list(bm.ports(details=True, node_id=ids["node"]))
        C.eq("ports(node) addresses", [p.address for p in ports], [MAC])

    with C.step("update"):
        node = bm.update_node(ids["node"], extra={"a": "b"})
        C.eq("extra after update_node", node.extra, {"a": "b"})
        node = bm.patch_node(ids["node"], [{"op": "add", "path": "/description", "value": "from sdk"},
                                           {"op": "add", "path": "/extra/c", "value": {"d": 1}}])
        C.eq("description after patch_node", node.description, "from sdk")
        C.eq("extra after patch_node", node.extra, {"a": "b", "c": {"d": 1}})
        node = bm.patch_node(ids["node"], [{"op": "remove", "path": "/extra/c"}])
        C.eq("extra after remove", node.extra, {"a": "b"})

    with C.step("errors"):
        try:
            bm.get_node("sdk-no-such-node")
            C.ok("unknown node raises NotFoundException", False)
        except exceptions.NotFoundException as err:
            C.ok("unknown node raises NotFoundException", "could not be found" in str(err), err)
        try:
            bm.create_port(address=MAC, node_uuid=ids["node"])
            C.ok("duplicate MAC raises ConflictException", False)
        except exceptions.ConflictException as err:
            C.ok("duplicate MAC raises ConflictException", "already exists" in str(err), err)
        try:
            bm.set_node_provision_state(ids["node"], "active")
            C.ok("deploy from enroll raises BadRequestException", False)
        except exceptions.BadRequestException as err:
            C.ok("deploy from enroll raises BadRequestException", "enroll" in str(err), err)

    with C.step("manage and provide"):
        node = bm.set_node_provision_state(ids["node"], "manage", wait=True, timeout=120)
        C.eq("after manage", node.provision_state, "manageable")
        node = bm.set_node_provision_state(ids["node"], "provide", wait=True, timeout=120)
        C.eq("after provide", node.provision_state, "available")

    with C.step("power and management"):
        bm.set_node_power_state(ids["node"], "power on", wait=True, timeout=60)
        C.eq("power_state after power on", bm.get_node(ids["node"]).power_state, "power on")
        bm.set_node_boot_device(ids["node"], "pxe", persistent=False)
        C.eq("boot device", bm.get_node_boot_device(ids["node"]).get("boot_device"), "pxe")
        sup = bm.get_node_supported_boot_devices(ids["node"])
        C.ok("pxe supported", "pxe" in (sup.get("supported_boot_devices") or []), sup)
        bm.add_node_trait(ids["node"], "CUSTOM_SDK")
        C.eq("traits", bm.get_node(ids["node"]).traits, ["CUSTOM_SDK"])
        result = bm.validate_node(ids["node"], required=("power",))
        C.eq("validate power", result["power"].result, True)
        node = bm.set_node_maintenance(ids["node"], reason="sdk check")
        node = bm.get_node(ids["node"])
        C.eq("maintenance set", (node.is_maintenance, node.maintenance_reason), (True, "sdk check"))
        bm.unset_node_maintenance(ids["node"])
        node = bm.get_node(ids["node"])
        C.eq("maintenance unset", (node.is_maintenance, node.maintenance_reason), (False, None))

    with C.step("deploy and undeploy"):
        bm.update_node(ids["node"], instance_info={"image_source": "http://127.0.0.1:1/sdk.img",
                                                   "image_checksum": "0" * 64, "root_gb": 10})
        node = bm.set_node_provision_state(ids["node"], "active", config_drive=CONFIG_DRIVE,
                                           wait=True, timeout=120)
        C.eq("after deploy", node.provision_state, "active")
        C.eq("configdrive masked", node.instance_info.get("configdrive"), "******")
        node = bm.set_node_provision_state(ids["node"], "deleted", wait=True, timeout=120)
        C.eq("after undeploy", node.provision_state, "available")
        C.ok("instance_info cleared", "image_source" not in (node.instance_info or {}), node.instance_info)

    with C.step("allocation"):
        # Ironic ignores never-powered nodes; make sure the power state is known.
        node = wait_until(lambda: bm.get_node(ids["node"]), lambda n: n.power_state is not None, timeout=30)
        C.ok("node has a power state", node.power_state is not None, node.power_state)
        alloc = bm.create_allocation(resource_class="baremetal", traits=["CUSTOM_SDK"], name="sdk-alloc")
        C.ok("allocation starts allocating or active", alloc.state in ("allocating", "active"), alloc.state)
        alloc = bm.wait_for_allocation(alloc, timeout=60)
        C.eq("allocation state", alloc.state, "active")
        C.eq("allocation node", alloc.node_id, ids["node"])
        C.eq("node allocation_id", bm.get_node(ids["node"]).allocation_id, alloc.id)
        bm.delete_allocation(alloc, ignore_missing=False)
        try:
            bm.get_allocation(alloc.id)
            C.ok("deleted allocation is gone", False)
        except exceptions.NotFoundException:
            C.ok("deleted allocation is gone", True)
        C.eq("node allocation_id after delete", bm.get_node(ids["node"]).allocation_id, None)

    with C.step("delete"):
        bm.delete_port(ids["port"], ignore_missing=False)
        bm.delete_node(ids["node"], ignore_missing=False)
        try:
            bm.get_node(ids["node"])
            C.ok("deleted node is gone", False)
        except exceptions.NotFoundException:
            C.ok("deleted node is gone", True)
        C.ok("nodes() no longer has sdk1", NAME not in [n.name for n in bm.nodes()])

    print(f"session took {time.monotonic() - started:.1f} s")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
