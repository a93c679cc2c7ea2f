#!/usr/bin/env python3
"""A full operator session with the real `baremetal` CLI (python-ironicclient).

Needs OS_ENDPOINT=http://HOST:PORT and OS_AUTH_TYPE=none (or https:// with OS_CACERT, and
OS_AUTH_TYPE=http_basic with OS_USERNAME/OS_PASSWORD, as the CLI reads them). The `baremetal` program is
taken from BAREMETAL, else from the directory of this Python (the venv), else PATH.
Set CLIENTS_PEER=ironic when the server is real Ironic. Every step is asserted on the
exit code and on the JSON the CLI prints; the last line is `N passed, M failed`.
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Checker, endpoint, inner_error, peer_is_ironic, raw_request, wait_until  # noqa: E402

N1, N2 = "cli-n1", "cli-n2"
N2_UUID = "5b3c2a8e-1d7f-4c39-9a61-0e6f2b7d4c11"
MAC1, MAC2 = "52:54:00:c1:00:01", "52:54:00:c1:00:02"
SHA256_ZERO = "0" * 64
CONFIG_DRIVE = {
    "meta_data": {"hostname": "cli-n1.example", "public_keys": {"0": "ssh-ed25519 AAAATEST cli"}},
    "user_data": "#cloud-config\nruncmd: []\n",
    "network_data": {"links": []},
}

C = Checker()


def baremetal_path():
    explicit = os.environ.get("BAREMETAL")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "baremetal")
    if os.path.exists(beside):
        return beside
    found = shutil.which("baremetal")
    if not found:
        print("baremetal CLI not found", file=sys.stderr)
        sys.exit(2)
    return found


BAREMETAL = baremetal_path()


class Result:
    def __init__(self, args, proc):
        self.args = args
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def describe(self):
        return (
            f"$ baremetal {' '.join(self.args)}\nexit {self.rc}\n"
            f"--- stdout\n{self.out}--- stderr\n{self.err}"
        )

    def json(self):
        return json.loads(self.out)


def bm(*args, timeout=180):
    args = [str(a) for a in args]
    proc = subprocess.run(
        [BAREMETAL, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    return Result(args, proc)


def ok(*args, what=None, timeout=180):
    """Runs a command that must succeed; returns its parsed JSON when `-f json` was asked for."""
    res = bm(*args, timeout=timeout)
    label = what or "baremetal " + " ".join(res.args)
    C.ok(f"{label} exits 0", res.rc == 0, res.describe())
    if "-f" in res.args and res.args[res.args.index("-f") + 1] == "json":
        try:
            return res.json()
        except ValueError:
            C.ok(f"{label} prints JSON", False, res.describe())
            return None
    return res


def fails(*args, contains=(), status=None, rc=1, what=None):
    """Runs a command that must fail with `rc` and print each of `contains` on stderr."""
    res = bm(*args)
    label = what or "baremetal " + " ".join(res.args)
    C.ok(f"{label} exits {rc}", res.rc == rc, res.describe())
    for text in contains:
        C.ok(f"{label} stderr has {text!r}", text in res.err, res.describe())
    if status is not None:
        C.ok(f"{label} stderr has (HTTP {status})", f"(HTTP {status})" in res.err, res.describe())
        C.ok(f"{label} stderr has a Request-ID", "(Request-ID: req-" in res.err, res.describe())
    return res


def show(ident, *fields):
    cols = []
    for f in fields:
        cols += ["-c", f]
    node = ok("node", "show", ident, "-f", "json", *cols, what=f"node show {ident}")
    return node or {}


def wait_power(ident, target):
    node = wait_until(lambda: show(ident, "power_state", "target_power_state"),
                      lambda n: n.get("power_state") == target, timeout=30, interval=0.3)
    C.eq(f"{ident} power_state", node.get("power_state"), target)
    C.eq(f"{ident} target_power_state", node.get("target_power_state"), None)


def main():
    print(f"baremetal: {BAREMETAL}; endpoint {endpoint()}; peer {'ironic' if peer_is_ironic() else 'ingot'}")
    uuids = {}
    started = time.monotonic()

    with C.step("drivers"):
        drivers = ok("driver", "list", "-f", "json") or []
        names = [d.get("name") for d in drivers]
        C.ok("fake-hardware is listed", "fake-hardware" in names, json.dumps(drivers))

    with C.step("conductors"):
        conductors = ok("conductor", "list", "-f", "json") or []
        def field(row, name):
            return next((v for k, v in row.items() if k.lower().replace(" ", "_") == name), None)
        C.ok("a live conductor is listed",
             len(conductors) >= 1 and all(field(c, "alive") in (True, "True") for c in conductors),
             json.dumps(conductors))
        host = field(conductors[0], "hostname") if conductors else None
        shown = ok("conductor", "show", str(host), "-f", "json") or {}
        C.eq("conductor show hostname", field(shown, "hostname"), host)
        C.ok("conductor show lists fake-hardware", "fake-hardware" in (field(shown, "drivers") or []),
             json.dumps(shown))

    with C.step("create nodes"):
        n1 = ok("node", "create", "--driver", "fake-hardware", "--name", N1,
                "--property", "cpus=8", "--property", "memory_mb=16384", "--property", "local_gb=100",
                "--property", "cpu_arch=x86_64", "--resource-class", "baremetal",
                "--driver-info", "ipmi_address=10.0.0.1", "--driver-info", "ipmi_password=secret",
                "--extra", "rack=r1", "-f", "json") or {}
        uuids[N1] = n1.get("uuid")
        C.ok("n1 has a uuid", isinstance(uuids[N1], str) and len(uuids[N1]) == 36, n1)
        C.eq("n1 name", n1.get("name"), N1)
        C.eq("n1 provision_state", n1.get("provision_state"), "enroll")
        C.eq("n1 target_provision_state", n1.get("target_provision_state"), None)
        C.eq("n1 power_state", n1.get("power_state"), None)
        C.eq("n1 maintenance", n1.get("maintenance"), False)
        C.eq("n1 driver", n1.get("driver"), "fake-hardware")
        C.eq("n1 resource_class", n1.get("resource_class"), "baremetal")
        C.eq("n1 properties", n1.get("properties"),
             {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"})
        C.eq("n1 extra", n1.get("extra"), {"rack": "r1"})
        info = n1.get("driver_info") or {}
        C.eq("n1 driver_info ipmi_address", info.get("ipmi_address"), "10.0.0.1")
        C.eq("n1 ipmi_password is masked", info.get("ipmi_password"), "******")
        n2 = ok("node", "create", "--driver", "fake-hardware", "--name", N2, "--uuid", N2_UUID,
                "--resource-class", "baremetal", "-f", "json") or {}
        uuids[N2] = n2.get("uuid")
        C.eq("n2 uuid is the one given", uuids[N2], N2_UUID)

    with C.step("node create errors"):
        fails("--max-retries", "0", "node", "create", "--driver", "fake-hardware", "--name", N1,
              contains=[f"A node with name {N1} already exists."], status=409,
              what="duplicate node name")
        fails("node", "create", "--driver", "fake-hardware", "--name", "bad name!",
              contains=["bad name!"], status=400, what="invalid node name")
        fails("node", "create", "--driver", "no-such-driver", status=400, what="unknown driver")

    with C.step("ports"):
        p1 = ok("port", "create", "--node", uuids[N1], MAC1, "-f", "json") or {}
        C.eq("port 1 address", p1.get("address"), MAC1)
        C.eq("port 1 node_uuid", p1.get("node_uuid"), uuids[N1])
        C.eq("port 1 pxe_enabled", p1.get("pxe_enabled"), True)
        uuids["p1"] = p1.get("uuid")
        p2 = ok("port", "create", "--node", uuids[N2], MAC2, "-f", "json") or {}
        uuids["p2"] = p2.get("uuid")
        C.eq("port 2 node_uuid", p2.get("node_uuid"), N2_UUID)
        listed = ok("port", "list", "--node", N1, "-f", "json") or []
        C.eq("port list --node n1 addresses", [p.get("address") for p in listed], [MAC1])
        by_addr = ok("port", "list", "--address", MAC2, "-f", "json") or []
        C.eq("port list --address uuids", [p.get("uuid") for p in by_addr], [uuids["p2"]])
        shown = ok("port", "show", "--address", MAC1, "-f", "json") or {}
        C.eq("port show --address uuid", shown.get("uuid"), uuids["p1"])
        ok("port", "set", uuids["p1"], "--extra", "vif=v1", "--physical-network", "physnet1")
        shown = ok("port", "show", uuids["p1"], "-f", "json") or {}
        C.eq("port extra after set", shown.get("extra"), {"vif": "v1"})
        C.eq("port physical_network after set", shown.get("physical_network"), "physnet1")
        ok("port", "unset", uuids["p1"], "--extra", "vif")
        shown = ok("port", "show", uuids["p1"], "-f", "json") or {}
        C.eq("port extra after unset", shown.get("extra"), {})

    with C.step("port errors"):
        fails("--max-retries", "0", "port", "create", "--node", uuids[N2], MAC1,
              contains=[f"A port with MAC address {MAC1} already exists."], status=409,
              what="duplicate MAC")
        fails("port", "create", "--node", uuids[N1], "not-a-mac",
              contains=["Expected valid MAC address for address: not-a-mac"], status=400,
              what="invalid MAC")
        fails("port", "create", "--node", N1, "52:54:00:c1:00:09",
              contains=[f"Expected UUID for node_uuid: {N1}"], status=400, what="port node by name")
        fails("port", "show", "0d7a1c8e-0000-4000-8000-000000000000",
              contains=["Port 0d7a1c8e-0000-4000-8000-000000000000 could not be found."], status=404,
              what="unknown port")

    with C.step("list and show nodes"):
        nodes = ok("node", "list", "-f", "json") or []
        C.eq("node list names", sorted(n.get("name") for n in nodes), [N1, N2])
        C.eq("node list columns", sorted(nodes[0].keys()) if nodes else None,
             sorted(["uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance"]))
        enroll = ok("node", "list", "--provision-state", "enroll", "-f", "json") or []
        C.eq("node list --provision-state enroll count", len(enroll), 2)
        avail = ok("node", "list", "--provision-state", "available", "-f", "json") or []
        C.eq("node list --provision-state available count", len(avail), 0)
        long = ok("node", "list", "--long", "-f", "json") or []
        C.ok("node list --long has Driver", all(n.get("driver") == "fake-hardware" for n in long) and len(long) == 2, long)
        limited = ok("node", "list", "--limit", "1", "-f", "json") or []
        C.eq("node list --limit 1 count", len(limited), 1)
        C.eq("node list --limit 1 is the first node", [n.get("name") for n in limited], [N1])
        rest = ok("node", "list", "--marker", uuids[N1], "-f", "json") or []
        C.eq("node list --marker n1 names", [n.get("name") for n in rest], [N2])
        maint = ok("node", "list", "--maintenance", "-f", "json") or []
        C.eq("node list --maintenance count", len(maint), 0)
        by_uuid = show(uuids[N1])
        C.eq("node show by uuid name", by_uuid.get("name"), N1)
        by_name = show(N1)
        C.eq("node show by name uuid", by_name.get("uuid"), uuids[N1])
        C.ok("node show has no links", "links" not in by_name, sorted(by_name))
        fields = ok("node", "show", N1, "--fields", "uuid", "name", "-f", "json") or {}
        C.eq("node show --fields keys", sorted(fields), ["name", "uuid"])

    with C.step("set and unset"):
        ok("node", "set", N1, "--property", "local_gb=200", "--extra", "owner=team-a",
           "--description", "first node", "--driver-info", "ipmi_port=623")
        node = show(N1, "properties", "extra", "description", "driver_info")
        C.eq("local_gb after set", (node.get("properties") or {}).get("local_gb"), 200)
        C.eq("extra after set", node.get("extra"), {"rack": "r1", "owner": "team-a"})
        C.eq("description after set", node.get("description"), "first node")
        C.eq("ipmi_port after set", (node.get("driver_info") or {}).get("ipmi_port"), 623)
        ok("node", "unset", N1, "--extra", "owner", "--description")
        node = show(N1, "extra", "description")
        C.eq("extra after unset", node.get("extra"), {"rack": "r1"})
        C.eq("description after unset", node.get("description"), None)
        fails("node", "unset", N1, "--extra", "no-such-key", status=400, what="unset missing key")

    with C.step("node errors"):
        fails("node", "show", "no-such-node", contains=["Node no-such-node could not be found."],
              status=404, what="unknown node")
        fails("--max-retries", "0", "node", "delete", "no-such-node",
              contains=["Failed to delete node no-such-node", "could not be found"], what="delete unknown node")
        fails("node", "deploy", N1,
              contains=[f'The requested action "active" can not be performed on node "{uuids[N1]}" '
                        'while it is in state "enroll".'],
              status=400, what="deploy from enroll")
        status, headers, text = raw_request(
            "POST", "/v1/nodes", body='{bad json',
            headers={"Content-Type": "application/json", "X-OpenStack-Ironic-API-Version": "1.115"})
        want = 500 if peer_is_ironic() else 400
        C.eq("malformed JSON status", status, want, text)
        try:
            fault = inner_error(text)
            C.ok("malformed JSON faultstring", bool(fault.get("faultstring")), text)
        except (ValueError, KeyError, TypeError):
            C.ok("malformed JSON error body is Ironic-shaped", False, text)
        C.ok("malformed JSON has x-openstack-request-id",
             (headers.get("x-openstack-request-id") or "").startswith("req-"), dict(headers))
        status, headers, text = raw_request("GET", "/v1/nodes", headers={"X-OpenStack-Ironic-API-Version": "1.999"})
        C.eq("unsupported version status", status, 406, text)
        C.eq("406 max version header", headers.get("X-OpenStack-Ironic-API-Maximum-Version"), "1.115")
        C.eq("406 min version header", headers.get("X-OpenStack-Ironic-API-Minimum-Version"), "1.1")

    with C.step("validate"):
        rows = ok("node", "validate", N1, "-f", "json") or []
        by_iface = {r.get("Interface"): r for r in rows}
        C.ok("validate lists power", "power" in by_iface, rows)
        C.eq("validate power result", (by_iface.get("power") or {}).get("Result"), True)

    with C.step("manage, inspect, provide"):
        ok("node", "manage", N1, N2, "--wait", "120", timeout=240)
        C.eq("n1 after manage", show(N1, "provision_state").get("provision_state"), "manageable")
        C.eq("n2 after manage", show(N2, "provision_state").get("provision_state"), "manageable")
        ok("node", "inspect", N1, "--wait", "120", timeout=240)
        node = show(N1, "provision_state", "target_provision_state")
        C.eq("n1 after inspect", node.get("provision_state"), "manageable")
        C.eq("n1 target after inspect", node.get("target_provision_state"), None)
        ok("node", "provide", N1, N2, "--wait", "120", timeout=240)
        C.eq("n1 after provide", show(N1, "provision_state").get("provision_state"), "available")
        C.eq("n2 after provide", show(N2, "provision_state").get("provision_state"), "available")
        fails("node", "inspect", N1, status=400, what="inspect from available")

    with C.step("power"):
        ok("node", "power", "off", N1)
        wait_power(N1, "power off")
        ok("node", "power", "off", N2)
        wait_power(N2, "power off")
        ok("node", "power", "on", N1)
        wait_power(N1, "power on")

    with C.step("boot device"):
        ok("node", "boot", "device", "set", N1, "pxe", "--persistent")
        dev = ok("node", "boot", "device", "show", N1, "-f", "json") or {}
        C.eq("boot device", dev.get("boot_device"), "pxe")
        C.ok("boot device persistent is a bool", isinstance(dev.get("persistent"), bool), dev)
        sup = ok("node", "boot", "device", "show", N1, "--supported", "-f", "json") or {}
        supported = sup.get("supported_boot_devices")
        C.ok("pxe is supported", supported is not None and "pxe" in supported, sup)
        if supported is not None and "disk" not in supported:
            fails("node", "boot", "device", "set", N1, "disk",
                  contains=["Invalid boot device disk specified."], status=400, what="unsupported boot device")

    with C.step("traits"):
        ok("node", "add", "trait", N1, "CUSTOM_GPU")
        traits = ok("node", "trait", "list", N1, "-f", "json") or []
        C.eq("traits", [t.get("traits") for t in traits], ["CUSTOM_GPU"])
        fails("node", "add", "trait", N1, "lower_case", status=400, what="invalid trait")

    with C.step("maintenance"):
        ok("node", "maintenance", "set", N2, "--reason", "fan broken")
        node = show(N2, "maintenance", "maintenance_reason")
        C.eq("maintenance after set", node.get("maintenance"), True)
        C.eq("maintenance_reason after set", node.get("maintenance_reason"), "fan broken")
        maint = ok("node", "list", "--maintenance", "-f", "json") or []
        C.eq("node list --maintenance names", [n.get("name") for n in maint], [N2])
        ok("node", "maintenance", "unset", N2)
        node = show(N2, "maintenance", "maintenance_reason")
        C.eq("maintenance after unset", node.get("maintenance"), False)
        C.eq("maintenance_reason after unset", node.get("maintenance_reason"), None)

    with C.step("deploy"):
        ok("node", "set", N1, "--instance-info", "image_source=http://127.0.0.1:1/cli.img",
           "--instance-info", f"image_checksum={SHA256_ZERO}", "--instance-info", "root_gb=10")
        ok("node", "deploy", N1, "--config-drive", json.dumps(CONFIG_DRIVE), "--wait", "120", timeout=240)
        node = show(N1)
        C.eq("n1 after deploy", node.get("provision_state"), "active")
        C.eq("n1 target after deploy", node.get("target_provision_state"), None)
        ii = node.get("instance_info") or {}
        C.eq("image_source kept", ii.get("image_source"), "http://127.0.0.1:1/cli.img")
        C.eq("root_gb kept", ii.get("root_gb"), 10)
        C.eq("configdrive masked", ii.get("configdrive"), "******")
        C.eq("last_error after deploy", node.get("last_error"), None)
        active = ok("node", "list", "--provision-state", "active", "-f", "json") or []
        C.eq("node list --provision-state active", [n.get("name") for n in active], [N1])
        fails("--max-retries", "0", "node", "delete", N1,
              contains=[f"Failed to delete node {N1}", "Can not delete node"], status=409,
              what="delete active node")
        fails("node", "provide", N1, status=400, what="provide from active")

    with C.step("undeploy"):
        ok("node", "undeploy", N1, "--wait", "120", timeout=240)
        node = show(N1)
        C.eq("n1 after undeploy", node.get("provision_state"), "available")
        C.ok("instance_info cleared", "image_source" not in (node.get("instance_info") or {}), node.get("instance_info"))
        C.eq("instance_uuid after undeploy", node.get("instance_uuid"), None)

    with C.step("allocations"):
        # Ironic skips nodes that were never powered; both nodes were powered above.
        alloc = ok("allocation", "create", "--resource-class", "baremetal", "--trait", "CUSTOM_GPU",
                   "--name", "cli-alloc1", "--wait", "60", "-f", "json", timeout=120) or {}
        C.eq("allocation state", alloc.get("state"), "active")
        C.eq("allocation node_uuid", alloc.get("node_uuid"), uuids[N1])
        C.eq("allocation name", alloc.get("name"), "cli-alloc1")
        node = show(N1, "allocation_uuid", "instance_uuid")
        C.eq("node allocation_uuid", node.get("allocation_uuid"), alloc.get("uuid"))
        C.eq("node instance_uuid", node.get("instance_uuid"), alloc.get("uuid"))
        listed = ok("allocation", "list", "-f", "json") or []
        C.ok("allocation list has it", any(a.get("uuid") == alloc.get("uuid") for a in listed), listed)
        shown = ok("allocation", "show", "cli-alloc1", "-f", "json") or {}
        C.eq("allocation show by name", shown.get("uuid"), alloc.get("uuid"))
        ok("allocation", "delete", "cli-alloc1")
        fails("allocation", "show", "cli-alloc1", contains=["Allocation cli-alloc1 could not be found."],
              status=404, what="deleted allocation")
        node = show(N1, "allocation_uuid", "instance_uuid")
        C.eq("node allocation_uuid after delete", node.get("allocation_uuid"), None)
        C.eq("node instance_uuid after delete", node.get("instance_uuid"), None)
        bad = fails("allocation", "create", "--resource-class", "baremetal", "--trait", "CUSTOM_NOPE",
                    "--wait", "60", contains=["failed"], what="allocation with no match")
        errored = ok("allocation", "list", "--state", "error", "-f", "json") or []
        C.eq("one allocation in error", len(errored), 1, bad.describe())
        for a in errored:
            ok("allocation", "delete", a.get("uuid"))

    # Inspection rules (API 1.96). Run against Ingot only: the pinned Ironic peer predates
    # the `baremetal inspection rule` commands' microversion on this recording.
    if not peer_is_ironic():
        with C.step("inspection rules"):
            conditions = json.dumps([{"op": "contains", "args": {
                "value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"}}])
            actions = json.dumps([{"op": "set-attribute", "args": {
                "path": "/driver_info/redfish_address", "value": "https://{inventory[bmc_address]}"}}])
            rule = ok("inspection", "rule", "create", "--description", "cli rule", "--priority", "50",
                      "--conditions", conditions, "--actions", actions, "-f", "json") or {}
            rid = rule.get("uuid")
            C.ok("rule has a uuid", isinstance(rid, str) and len(rid) == 36, rule)
            C.eq("rule priority", rule.get("priority"), 50)
            C.eq("rule phase", rule.get("phase"), "main")
            C.eq("rule actions", rule.get("actions"), json.loads(actions))
            rows = ok("inspection", "rule", "list", "-f", "json") or []
            C.ok("rule is listed", any(r.get("UUID", r.get("uuid")) == rid for r in rows), rows)
            ok("inspection", "rule", "set", rid, "--priority", "60", "--description", "cli rule 2")
            shown = ok("inspection", "rule", "show", rid, "-f", "json") or {}
            C.eq("rule priority after set", shown.get("priority"), 60)
            C.eq("rule description after set", shown.get("description"), "cli rule 2")
            fails("inspection", "rule", "create", "--actions",
                  json.dumps([{"op": "explode", "args": {}}]), status=400,
                  contains=["Unsupported action operator: explode"], what="rule with a bad action")
            ok("inspection", "rule", "delete", rid)
            fails("inspection", "rule", "show", rid, status=404, what="deleted rule")

    # Deploy templates (API 1.55), against Ingot and real Ironic alike.
    with C.step("deploy templates"):
        t_steps = [{"interface": "deploy", "step": "erase_devices_metadata", "args": {}, "priority": 150}]
        t_name, t_name2 = "CUSTOM_CLI_TEMPLATE", "CUSTOM_CLI_TEMPLATE2"
        created = ok("deploy", "template", "create", t_name, "--steps", json.dumps(t_steps),
                     "-f", "json") or {}
        tid = created.get("uuid")
        C.ok("template has a uuid", isinstance(tid, str) and len(tid) == 36, created)
        C.eq("template name", created.get("name"), t_name)
        C.eq("template steps", created.get("steps"), t_steps)
        C.eq("template extra", created.get("extra"), {})
        rows = ok("deploy", "template", "list", "-f", "json") or []
        C.eq("template list", [(r.get("UUID", r.get("uuid")), r.get("Name", r.get("name")))
                               for r in rows], [(tid, t_name)])
        by_name = ok("deploy", "template", "show", t_name, "-f", "json") or {}
        C.eq("template show by name", by_name.get("uuid"), tid)
        C.eq("template steps shown", by_name.get("steps"), t_steps)
        by_uuid = ok("deploy", "template", "show", tid, "-f", "json") or {}
        C.eq("template show by uuid", by_uuid.get("name"), t_name)
        C.eq("template updated_at before set", by_uuid.get("updated_at"), None)
        ok("deploy", "template", "set", t_name, "--name", t_name2, "--extra", "k=v")
        shown = ok("deploy", "template", "show", tid, "-f", "json") or {}
        C.eq("template name after set", shown.get("name"), t_name2)
        C.eq("template extra after set", shown.get("extra"), {"k": "v"})
        C.ok("template updated_at after set", bool(shown.get("updated_at")), shown)
        C.eq("template steps after set", shown.get("steps"), t_steps)
        fails("deploy", "template", "show", t_name, status=404,
              contains=[f"Deploy template {t_name} could not be found."], what="template by its old name")
        ok("deploy", "template", "unset", t_name2, "--extra", "k")
        shown = ok("deploy", "template", "show", t_name2, "-f", "json") or {}
        C.eq("template extra after unset", shown.get("extra"), {})
        # Both refuse a name that is not a trait, in their own words: Ironic's is its JSON
        # schema's ("... does not match '^CUSTOM_[A-Z0-9_]+$'"), Ingot's names the rule.
        bad_name_texts = ["cli-bad-name"]
        if not peer_is_ironic():
            bad_name_texts.append("Deploy template name must be a valid trait")
        fails("deploy", "template", "create", "cli-bad-name", "--steps", json.dumps(t_steps),
              status=400, contains=bad_name_texts, what="template with a bad name")
        fails("--max-retries", "0", "deploy", "template", "create", t_name2, "--steps", json.dumps(t_steps),
              status=409, contains=[f"A deploy template with name {t_name2} already exists."],
              what="duplicate template name")
        ok("deploy", "template", "delete", t_name2)
        fails("deploy", "template", "show", tid, status=404,
              contains=[f"Deploy template {tid} could not be found."], what="deleted template")
        left = ok("deploy", "template", "list", "-f", "json") or []
        C.eq("no templates left", left, [])

    # Software RAID (API 1.12): the `agent` RAID interface, a target set from a file and as
    # JSON, shown, refused when invalid, cleared. The peer Ironic enables `agent` RAID too
    # (xtask/src/ironic.rs); its AgentRAID takes any valid document, Ingot's only software RAID.
    with C.step("software RAID"):
        target = {"logical_disks": [
            {"raid_level": "1", "size_gb": 20, "controller": "software", "volume_name": "root",
             "physical_disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}]},
            {"raid_level": "0", "size_gb": "MAX", "controller": "software",
             "physical_disks": [{"name": "/dev/vda"}, {"name": "/dev/vdb"}]}]}
        ok("node", "set", N2, "--raid-interface", "agent")
        C.eq("raid_interface", show(N2, "raid_interface").get("raid_interface"), "agent")
        path = os.path.join(os.environ.get("HOME", "/tmp"), "cli-raid.json")
        with open(path, "w") as f:
            json.dump(target, f)
        ok("node", "set", N2, "--target-raid-config", path, what="target RAID from a file")
        shown = show(N2, "target_raid_config", "raid_config")
        C.eq("target_raid_config shown", shown.get("target_raid_config"), target)
        C.eq("raid_config before any build", shown.get("raid_config"), {})
        fails("node", "set", N2, "--target-raid-config", json.dumps({"logical_disks": []}),
              status=400, contains=["RAID config validation error"], what="empty logical_disks")
        fails("node", "set", N2, "--target-raid-config",
              json.dumps({"logical_disks": [{"raid_level": "7", "size_gb": 1}]}),
              status=400, contains=["RAID config validation error", "'7' is not one of"],
              what="unknown RAID level")
        if not peer_is_ironic():
            hardware = {"logical_disks": [{"raid_level": "1", "size_gb": 10, "controller": "RAID.1"}]}
            fails("node", "set", N2, "--target-raid-config", json.dumps(hardware), status=400,
                  contains=['"controller": "software"'], what="hardware RAID on agent RAID")
            mixed = {"logical_disks": [target["logical_disks"][0],
                                       dict(target["logical_disks"][1], raid_level="1+0")]}
            fails("node", "set", N2, "--target-raid-config", json.dumps(mixed), status=400,
                  contains=["not supported by Ingot"], what="RAID 1+0 on software RAID")
        C.eq("target unchanged by refusals", show(N2, "target_raid_config").get("target_raid_config"),
             target)
        one = {"logical_disks": [target["logical_disks"][0]]}
        ok("node", "set", N2, "--target-raid-config", json.dumps(one), what="target RAID as JSON")
        C.eq("target replaced", show(N2, "target_raid_config").get("target_raid_config"), one)
        ok("node", "unset", N2, "--target-raid-config", what="clear the target")
        C.eq("target cleared", show(N2, "target_raid_config").get("target_raid_config"), {})
        ok("node", "set", N2, "--raid-interface", "no-raid")
        fails("node", "set", N2, "--target-raid-config", json.dumps(target), status=404,
              contains=["does not support raid"], what="target on no-raid")
        ok("node", "set", N2, "--raid-interface", "fake")

    with C.step("history"):
        events = ok("node", "history", "list", N1, "-f", "json") or []
        C.ok("history has events", isinstance(events, list) and len(events) > 0, events)
        C.ok("history events have fields",
             all({"uuid", "created_at", "severity", "event"} <= set(e) for e in events), events)

    with C.step("delete"):
        ok("port", "delete", uuids["p2"])
        fails("port", "show", uuids["p2"], status=404, what="deleted port")
        ok("node", "delete", N1, N2)
        fails("node", "show", N1, contains=[f"Node {N1} could not be found."], status=404, what="deleted node")
        fails("port", "show", uuids["p1"], status=404, what="port of deleted node")
        left = ok("node", "list", "-f", "json") or []
        C.eq("no cli nodes left", [n.get("name") for n in left if str(n.get("name")).startswith("cli-")], [])

    print(f"session took {time.monotonic() - started:.1f} s")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
