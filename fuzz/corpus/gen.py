#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (run from anywhere;
needs python3, zstd, xz and qemu-img). Seeds are small, realistic inputs: DHCP packets shaped
like PXE ROMs, iPXE, UEFI HTTP boot and the agent send them, BMC replies of the shapes ipmi_sim
and sushy-tools give, real `qemu-img info` output, and so on. Deterministic: running it again
rewrites the same bytes, but for the qemu-img outputs (qemu-img version, VMDK CIDs)."""
import gzip, hashlib, hmac, json, lzma, os, struct, subprocess, sys, tempfile, uuid, zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- DHCP
def opt(code, data):
    return bytes([code, len(data)]) + data


def bootp(op, xid, mac, opts, ciaddr=b"\0" * 4, yiaddr=b"\0" * 4, siaddr=b"\0" * 4,
          flags=0, file=b""):
    h = struct.pack("!BBBBIHH", op, 1, 6, 0, xid, 0, flags)
    h += ciaddr + yiaddr + siaddr + b"\0" * 4
    h += mac + b"\0" * 10 + b"\0" * 64 + file.ljust(128, b"\0")
    h += bytes([99, 130, 83, 99]) + b"".join(opts) + b"\xff"
    return h


MAC = bytes([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
SMBIOS = uuid.UUID("4c4c4544-0042-3510-8052-b4c04f4d3232")
# Option 97: type 0 then the SMBIOS UUID with its first three fields little-endian.
O97 = opt(97, b"\0" + SMBIOS.bytes_le)


def pxe(arch):
    return [opt(60, b"PXEClient:Arch:%05d:UNDI:003000" % arch), opt(93, struct.pack("!H", arch)),
            opt(94, b"\x01\x03\x00"), O97]


def dhcp_seeds():
    ipxe = [opt(77, b"iPXE"), opt(175, bytes([16, 1, 1, 19, 1, 1, 24, 1, 1]))]
    params = opt(55, bytes([1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 119, 128, 129, 175, 203]))
    req = opt(50, bytes([10, 9, 0, 100]))
    sid = opt(54, bytes([10, 9, 0, 1]))
    seeds = {
        "pxe-bios-discover": bootp(1, 0x11223344, MAC, [opt(53, b"\x01"), params, opt(57, b"\x05\xc0")] + pxe(0), flags=0x8000),
        "pxe-efi-discover": bootp(1, 0x55667788, MAC, [opt(53, b"\x01"), params] + pxe(7)),
        "pxe-efi-request": bootp(1, 0x55667788, MAC, [opt(53, b"\x03"), req, sid, params] + pxe(7)),
        "ipxe-discover": bootp(1, 0x0a0b0c0d, MAC, [opt(53, b"\x01"), params] + pxe(0) + ipxe),
        "ipxe-request": bootp(1, 0x0a0b0c0d, MAC, [opt(53, b"\x03"), req, sid, params] + pxe(0) + ipxe),
        "http-boot-discover": bootp(1, 0x01020304, MAC, [opt(53, b"\x01"), opt(60, b"HTTPClient:Arch:00016:UNDI:003001"), opt(93, b"\x00\x10"), O97]),
        "agent-discover": bootp(1, 0x00c0ffee, MAC, [opt(53, b"\x01"), opt(55, bytes([1, 3, 6, 15, 51, 54, 58, 59])), opt(61, b"\x01" + MAC)]),
        "agent-renew": bootp(1, 0x00c0ffef, MAC, [opt(53, b"\x03"), opt(55, bytes([1, 3, 6, 51, 54, 58, 59]))], ciaddr=bytes([10, 9, 0, 101])),
        "proxy-4011-request": bootp(1, 0x77, MAC, [opt(53, b"\x03"), params] + pxe(7), ciaddr=bytes([10, 9, 0, 101])),
        "inform": bootp(1, 0x78, MAC, [opt(53, b"\x08")] + pxe(9), ciaddr=bytes([10, 9, 0, 101])),
        "release": bootp(1, 0x79, MAC, [opt(53, b"\x07"), sid], ciaddr=bytes([10, 9, 0, 100])),
        "decline": bootp(1, 0x7a, MAC, [opt(53, b"\x04"), req, sid]),
        "reserved-mac-discover": bootp(1, 0x7b, bytes([0x52, 0x54, 0, 0, 0, 9]), [opt(53, b"\x01")] + pxe(0)),
    }
    for name, pkt in seeds.items():
        put("dhcp_server", name, pkt)

    server_opts = [sid, opt(1, bytes([255, 255, 255, 0])), opt(3, bytes([10, 9, 0, 1])),
                   opt(6, bytes([10, 9, 0, 1, 8, 8, 8, 8])), opt(15, b"lab.example"),
                   opt(12, b"node-1"), opt(51, struct.pack("!I", 600)),
                   opt(58, struct.pack("!I", 300)), opt(59, struct.pack("!I", 525))]
    yi = bytes([10, 9, 0, 100])
    offer = bootp(2, 1, MAC, [opt(53, b"\x02")] + server_opts, yiaddr=yi, siaddr=bytes([10, 9, 0, 1]))
    ack = bootp(2, 1, MAC, [opt(53, b"\x05")] + server_opts, yiaddr=yi)
    put("agent_dhcp", "offer", offer)
    put("agent_dhcp", "ack", ack)
    put("agent_dhcp", "ack-infinite", bootp(2, 1, MAC, [opt(53, b"\x05"), sid, opt(51, b"\xff\xff\xff\xff")], yiaddr=yi))
    put("agent_dhcp", "ack-t1-after-t2", bootp(2, 1, MAC, [opt(53, b"\x05"), sid, opt(51, struct.pack("!I", 120)), opt(58, struct.pack("!I", 100)), opt(59, struct.pack("!I", 50))], yiaddr=yi))
    put("agent_dhcp", "nak", bootp(2, 1, MAC, [opt(53, b"\x06"), sid, opt(56, b"address not available")]))
    # The same ACK as the AF_PACKET socket gives it: IPv4 + UDP headers first.
    udp = struct.pack("!HHHH", 67, 68, 8 + len(ack), 0) + ack
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([10, 9, 0, 1]), b"\xff" * 4)
    put("agent_dhcp", "ack-frame", ip + udp)


# ---------------------------------------------------------------- TFTP
def tftp_seeds():
    def rq(op, name, mode=b"octet", opts=()):
        return struct.pack("!H", op) + name + b"\0" + mode + b"\0" + b"".join(k + b"\0" + v + b"\0" for k, v in opts)
    put("tftp", "rrq-undionly", rq(1, b"undionly.kpxe"))
    put("tftp", "rrq-snponly-options", rq(1, b"snponly.efi", opts=[(b"blksize", b"1468"), (b"tsize", b"0"), (b"windowsize", b"8"), (b"timeout", b"3")]))
    put("tftp", "rrq-leading-slash", rq(1, b"/ipxe.efi", b"netascii"))
    put("tftp", "rrq-traversal", rq(1, b"../../etc/shadow"))
    put("tftp", "wrq", rq(2, b"undionly.kpxe"))
    put("tftp", "ack", struct.pack("!HH", 4, 1))
    put("tftp", "error", struct.pack("!HH", 5, 2) + b"denied\0")
    put("tftp", "data", struct.pack("!HH", 3, 1) + b"x" * 32)


# ---------------------------------------------------------------- IPMI
RMCP = bytes([0x06, 0x00, 0xFF, 0x07])


def v15(msg):
    return RMCP + b"\0" + b"\0" * 8 + bytes([len(msg)]) + msg


def v20(ptype, sid, seq, payload):
    return RMCP + bytes([0x06, ptype]) + struct.pack("<IIH", sid, seq, len(payload)) + payload


def cks(b):
    return (-sum(b)) & 0xFF


def response(netfn, cmd, seq, cc, data):
    m = bytes([0x81, (netfn + 1) << 2])
    m += bytes([cks(m)])
    body = bytes([0x20, seq << 2, cmd, cc]) + data
    return m + body + bytes([cks(body)])


def ipmi_seeds():
    put("ipmi", "channel-auth-caps", v15(response(0x06, 0x38, 0, 0, bytes([0x01, 0x80 | 0x14, 0x04, 0x00, 0, 0, 0, 0]))))
    put("ipmi", "open-session-ok", v20(0x11, 0, 0, bytes([0x42, 0, 4, 0]) + struct.pack("<II", 0x01020305, 0x0a0b0c0d)
        + bytes([0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0])))
    put("ipmi", "open-session-refused", v20(0x11, 0, 0, bytes([0x42, 0x11, 0, 0]) + struct.pack("<I", 0x01020305)))
    # RAKP 2 for suite 3 (HMAC-SHA1, 20-byte code) and suite 17 (HMAC-SHA256, 32 bytes).
    rnd, guid = bytes(range(16)), bytes(range(16, 32))
    put("ipmi", "rakp2-suite3", v20(0x13, 0, 0, bytes([0x43, 0, 0, 0]) + struct.pack("<I", 0x01020305) + rnd + guid + b"\x55" * 20))
    put("ipmi", "rakp2-suite17", v20(0x13, 0, 0, bytes([0x43, 0, 0, 0]) + struct.pack("<I", 0x01020305) + rnd + guid + b"\x55" * 32))
    put("ipmi", "rakp2-unknown-user", v20(0x13, 0, 0, bytes([0x43, 0x0D, 0, 0]) + struct.pack("<I", 0x01020305)))
    put("ipmi", "rakp4", v20(0x15, 0, 0, bytes([0x44, 0, 0, 0]) + struct.pack("<I", 0x01020305) + b"\x66" * 12))
    # An authenticated, encrypted chassis status answer under the fuzz target's suite-3 keys
    # (SIK = 0x5a * 20): K1 = HMAC(SIK, 0x01 * 20), K2 = HMAC(SIK, 0x02 * 20).
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    sik = b"\x5a" * 20
    k1 = hmac.new(sik, b"\x01" * 20, hashlib.sha1).digest()
    k2 = hmac.new(sik, b"\x02" * 20, hashlib.sha1).digest()[:16]
    msg = response(0x00, 0x01, 1, 0, bytes([0x01, 0x00, 0x40, 0x70]))
    pad = (16 - (len(msg) + 1) % 16) % 16
    plain = msg + bytes(range(1, pad + 1)) + bytes([pad])
    iv = bytes(16)
    enc = Cipher(algorithms.AES(k2), modes.CBC(iv)).encryptor()
    body = iv + enc.update(plain) + enc.finalize()
    pkt = RMCP + bytes([0x06, 0xC0]) + struct.pack("<IIH", 0x01020305, 1, len(body)) + body
    session_len = len(pkt) - 4
    padn = (4 - (session_len + 2) % 4) % 4
    pkt += b"\xff" * padn + bytes([padn, 0x07])
    pkt += hmac.new(k1, pkt[4:], hashlib.sha1).digest()[:12]
    put("ipmi", "sealed-chassis-status-suite3", pkt)


# ---------------------------------------------------------------- Redfish
def redfish_seeds():
    system = {
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem", "@odata.id": "/redfish/v1/Systems/vm-1",
        "Id": "vm-1", "Name": "vm-1", "UUID": "c9e6b1d4-3b1a-4c5e-9e1f-2b6c1d7e8f90", "PowerState": "On",
        "Boot": {"BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideTarget": "Pxe",
                 "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Cd", "Hdd"],
                 "BootSourceOverrideMode": "UEFI"},
        "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/vm-1/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn"]}},
    }
    put("redfish", "system-sushy", json.dumps(system, indent=2))
    off = dict(system, PowerState="Off", Boot={"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Hdd", "BootSourceOverrideMode": "Legacy"})
    off["Actions"] = {"#ComputerSystem.Reset": {"ResetType@Redfish.AllowableValues": ["PushPowerButton", "PowerCycle"]}}
    put("redfish", "system-off-restricted", json.dumps(off))
    put("redfish", "systems-one", json.dumps({"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1, "Members": [{"@odata.id": "/redfish/v1/Systems/vm-1/"}]}))
    put("redfish", "systems-two", json.dumps({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/2"}]}))
    put("redfish", "error-extended", json.dumps({"error": {"code": "Base.1.0.GeneralError", "message": "A general error has occurred.",
        "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.PropertyValueNotInList", "Message": "The value Foo for the property ResetType is not in the list of acceptable values."}]}}))
    put("redfish", "error-plain", "<html><body>401 Unauthorized</body></html>")
    put("redfish", "driver-info-redfish", json.dumps({"redfish_address": "https://10.0.0.9:8000", "redfish_system_id": "/redfish/v1/Systems/vm-1",
        "redfish_username": "admin", "redfish_password": "password", "redfish_verify_ca": False, "redfish_auth_type": "session"}))
    put("redfish", "driver-info-ipmi", json.dumps({"ipmi_address": "10.0.0.9", "ipmi_port": 623, "ipmi_username": "admin",
        "ipmi_password": "password", "ipmi_cipher_suite": 17, "ipmi_priv_level": "ADMINISTRATOR"}))


# ---------------------------------------------------------------- API, patch, htpasswd
NODE = "0f0f0000-0000-4000-8000-000000000001"


def api_seeds():
    bodies = [
        (0, {"name": "n1", "driver": "fake-hardware", "resource_class": "baremetal", "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"}, "extra": {"rack": "r1"}}),
        (0, {"driver": "ipmi", "driver_info": {"ipmi_address": "10.0.0.5", "ipmi_username": "admin", "ipmi_password": "x"}, "boot_mode": "uefi", "traits": ["CUSTOM_GPU"]}),
        (1, [{"op": "replace", "path": "/driver_info/ipmi_password", "value": "new"}, {"op": "add", "path": "/extra/tags", "value": ["a"]}]),
        (1, [{"op": "add", "path": "/instance_info/image_source", "value": "ingot://debian-12"}, {"op": "remove", "path": "/properties/cpus"}]),
        (2, {"address": "52:54:00:aa:bb:cc", "node_uuid": NODE, "extra": {"dhcp_address": "10.9.0.60"}, "pxe_enabled": True}),
        (3, [{"op": "replace", "path": "/address", "value": "52:54:00:aa:bb:dd"}]),
        (4, {"resource_class": "baremetal", "traits": ["CUSTOM_GPU"], "candidate_nodes": [NODE], "name": "alloc-1"}),
        (5, {"target": "manage"}),
        (5, {"target": "deploy", "configdrive": {"meta_data": {"public_keys": {"0": "ssh-ed25519 AAAA"}}, "user_data": "#cloud-config\n"}}),
        (5, {"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata"}]}),
        (6, {"target": "power on", "timeout": 30}),
        (7, {"boot_device": "pxe", "persistent": True}),
        (8, {"traits": ["CUSTOM_A", "CUSTOM_B"]}),
        (9, {"reason": "disk swap"}),
        (10, {"target": "uefi"}),
    ]
    # The second node (selector bit 7) starts in enroll: the operator's way through its life.
    bodies += [(0x85, {"target": t}) for t in ["manage", "inspect", "provide", "active", "deleted", "clean", "rescue", "abort", "adopt"]]
    bodies += [(0x81, [{"op": "replace", "path": "/driver", "value": "ipmi"}]), (0x86, {"target": "rebooting"}),
               (0x89, {"reason": "x"}), (0x8a, {"target": "bios"}), (0x87, {"boot_device": "disk"})]
    for i, (sel, body) in enumerate(bodies):
        put("api_body", "%02d-endpoint%d%s" % (i, sel & 0x7f, "-node2" if sel & 0x80 else ""), bytes([sel]) + json.dumps(body).encode())
    patches = [
        [{"op": "replace", "path": "/driver_info/ipmi_password", "value": "new"}],
        [{"op": "add", "path": "/extra/tags/-", "value": "d"}, {"op": "remove", "path": "/extra/tags/0"}],
        [{"op": "replace", "path": "/extra/deep/x/y/1/z", "value": {"k": 1}}],
        [{"op": "remove", "path": "/driver_info/nested/list/2/redfish_password"}],
        [{"op": "add", "path": "/properties/a~1b", "value": 1}, {"op": "replace", "path": "/name", "value": "n2"}],
        [{"op": "replace", "path": "/driver_info/ipmi_password/x", "value": 1}],
        {"op": "add"},
    ]
    for i, p in enumerate(patches):
        put("json_patch", "patch-%d" % i, json.dumps(p))
    put("htpasswd", "file", "# users\nadmin:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC\n\nalice:$2b$10$abcdefghijklmnopqrstuu5Z.uP2VfaX6FtM5Ibq5G0q9ViOsxF1y\n")
    put("htpasswd", "bad-scheme", "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    put("htpasswd", "basic-header", "Basic YWRtaW46c2VjcmV0")
    put("htpasswd", "credentials", "admin:p@ss:word")


# ---------------------------------------------------------------- agent protocol
def agent_seeds():
    golden = os.path.join(HERE, "..", "..", "proto", "tests", "output")
    with open(os.path.join(golden, "inventory.json")) as f:
        inventory = json.load(f)
    inventory["interfaces"][0]["mac_address"] = "52:54:00:f0:0f:01"
    with open(os.path.join(golden, "events.json")) as f:
        events = json.load(f)
    lookup = {"protocol_version": 1, "agent_version": "0.1.0", "macs": ["52:54:00:f0:0f:01"], "boot_mac": "52:54:00:f0:0f:01",
              "system_uuid": str(SMBIOS), "system_serial": "S123", "inventory": inventory}
    unknown = json.loads(json.dumps(lookup))
    unknown["macs"] = ["52:54:00:99:99:99"]
    hb_idle = {"node_uuid": NODE, "state": {"state": "idle"}}
    hb_busy = {"node_uuid": NODE, "state": {"state": "busy", "command_id": "11111111-2222-4333-8444-555555555555"}}
    event = {"node_uuid": NODE, "command_id": "11111111-2222-4333-8444-555555555555",
             "report": {"report": "failed", "error": {"message": "disk /dev/sda is read-only", "causes": ["EROFS"]}}}
    progress = {"node_uuid": NODE, "command_id": "11111111-2222-4333-8444-555555555555",
                "report": {"report": "event", "event": events[0]}}
    write_done = {"node_uuid": NODE, "command_id": "11111111-2222-4333-8444-555555555555",
                  "report": {"report": "event", "event": events[2]}}
    inspected = {"node_uuid": NODE, "command_id": "11111111-2222-4333-8444-555555555555",
                 "report": {"report": "succeeded", "inventory": inventory}}
    done = {"node_uuid": NODE, "command_id": "11111111-2222-4333-8444-555555555555", "report": {"report": "succeeded", "detail": {"written": 1}}}
    for sel, name, body in [(0, "lookup", lookup), (0x80, "lookup-with-token", lookup), (0, "lookup-unknown", unknown),
                            (0x81, "heartbeat-idle", hb_idle), (0x81, "heartbeat-busy", hb_busy), (1, "heartbeat-no-token", hb_idle),
                            (0x82, "event-failed", event), (0x82, "event-progress", progress), (0x82, "event-succeeded", done),
                            (0x82, "event-write-done", write_done), (0x82, "event-inspected", inspected)]:
        put("agent_api", name, bytes([sel]) + json.dumps(body).encode())
    # An in-band BMC enrolment result document, as the agent reports it (also read whole).
    with open(os.path.join(golden, "bmc_enrolled.json")) as f:
        enrolled = json.load(f)
    put("agent_api", "bmc-enrolled", bytes([0x82]) + json.dumps(enrolled[0]).encode())

    deploy = {"command_id": "11111111-2222-4333-8444-555555555555", "command": {"command": "deploy",
              "image_url": "https://10.9.0.1:8443/images/debian-12.raw.zst?node=x&expires=1&sig=ab",
              "checksum": "sha256:" + "ab" * 32, "root_device_hints": {"size": ">= 4", "rotational": False},
              "configdrive": {"kind": "parts", "meta_data": {"uuid": NODE, "public_keys": {"0": "ssh-ed25519 AAAA"}},
                              "user_data": "#cloud-config\n", "network_data": {"links": []}}, "min_disk_bytes": 4294967296}}
    gz = {"command_id": "11111111-2222-4333-8444-555555555556", "command": {"command": "deploy", "image_url": "http://x/i.raw",
          "checksum": "md5:" + "cd" * 16, "configdrive": {"kind": "gzip_base64", "data": "H4sIAAAAAAAAA0tMSgYAw3+3mgQAAAA="}}}
    put("agent_command", "heartbeat-deploy", json.dumps(deploy))
    put("agent_command", "heartbeat-deploy-gzip", json.dumps(gz))
    put("agent_command", "heartbeat-wipe", json.dumps({"command_id": "11111111-2222-4333-8444-555555555557", "command": {"command": "wipe", "mode": "metadata", "devices": ["/dev/sda"]}}))
    put("agent_command", "heartbeat-wait", json.dumps({"command_id": "11111111-2222-4333-8444-555555555558", "command": {"command": "wait", "seconds": 5}}))
    put("agent_command", "heartbeat-reboot", json.dumps({"command_id": "11111111-2222-4333-8444-555555555559", "command": {"command": "reboot"}}))
    put("agent_command", "lookup-answer", json.dumps({"node_uuid": NODE, "token": "f" * 64, "discovered": True, "heartbeat_timeout_secs": 30}))
    put("agent_command", "lookup-answer-no-token", json.dumps({"node_uuid": NODE, "token": None, "discovered": False, "heartbeat_timeout_secs": 30}))
    put("agent_command", "event-report", json.dumps(event))


# ---------------------------------------------------------------- images
def gpt(sector, parts=((2048, 4095), (4096, 16383))):
    """A protective MBR and a GPT for `sector`-byte sectors, entries at LBA 2."""
    mbr = bytearray(sector)
    mbr[0x1be:0x1be + 16] = bytes([0, 0, 2, 0, 0xEE, 0xff, 0xff, 0xff]) + struct.pack("<II", 1, 0xffffffff)
    mbr[510:512] = b"\x55\xaa"
    entries = bytearray(128 * 128)
    for i, (first, last) in enumerate(parts):
        e = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le + uuid.UUID(int=i + 1).bytes_le
        e += struct.pack("<QQQ", first, last, 0) + "p{}".format(i).encode("utf-16-le").ljust(72, b"\0")
        entries[128 * i:128 * (i + 1)] = e
    total_lbas = (64 << 20) // sector
    hdr = bytearray(b"EFI PART" + struct.pack("<IIII", 0x00010000, 92, 0, 0)
                    + struct.pack("<QQQQ", 1, total_lbas - 1, 34, total_lbas - 34)
                    + uuid.UUID(int=99).bytes_le + struct.pack("<QIII", 2, 128, 128, zlib.crc32(entries)))
    hdr[16:20] = struct.pack("<I", zlib.crc32(bytes(hdr)))
    lba1 = bytes(hdr).ljust(sector, b"\0")
    img = bytes(mbr) + lba1
    img += b"\0" * (2 * sector - len(img)) + bytes(entries)
    return img


def image_seeds():
    mbr = bytearray(512)
    mbr[0x1be:0x1be + 16] = bytes([0x80, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 2048, 16384)
    mbr[510:512] = b"\x55\xaa"
    put("image_head", "mbr", bytes(mbr))
    put("image_head", "gpt-512", gpt(512))
    put("image_head", "gpt-4096", gpt(4096, ((256, 511), (512, 2047))))
    put("image_head", "gpt-512-misaligned", gpt(512, ((2049, 4095),)))
    put("image_head", "qcow2-header", b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 64)
    put("image_head", "vmdk-descriptor", b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n")
    put("image_head", "gpt-512.gz", gzip.compress(gpt(512), mtime=0))
    put("image_head", "gpt-512.xz", lzma.compress(gpt(512)))
    put("image_head", "mbr.zst", subprocess.run(["zstd", "-q", "-c", "-19"], input=bytes(mbr), capture_output=True, check=True).stdout)
    put("image_head", "bzip2-magic", b"BZh91AY&SY")

    with tempfile.TemporaryDirectory() as d:
        outs = {}
        for fmt, extra in [("raw", []), ("qcow2", []), ("vmdk", ["-o", "subformat=monolithicSparse"]), ("vmdk", ["-o", "subformat=twoGbMaxExtentFlat"]), ("vdi", [])]:
            name = os.path.join(d, "img-%s-%d.%s" % (fmt, len(outs), fmt))
            subprocess.run(["qemu-img", "create", "-q", "-f", fmt] + extra + [name, "64M"], check=True)
            out = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, name], capture_output=True, check=True, text=True).stdout
            outs[os.path.basename(name)] = out.replace(d, "/var/lib/ingot/images/.import-fuzz")
        base = os.path.join(d, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"], check=True)
        over = os.path.join(d, "over.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", over], check=True)
        outs["backing"] = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", over], capture_output=True, check=True, text=True).stdout.replace(d, "/tmp/x")
        df = os.path.join(d, "df.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + os.path.join(d, "data.raw"), df, "64M"], check=True)
        outs["data-file"] = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", df], capture_output=True, check=True, text=True).stdout.replace(d, "/tmp/x")
    for name, out in outs.items():
        put("qemu_img_info", name, out)


# ---------------------------------------------------------------- LLDP
def lldp_tlv(kind, value):
    return struct.pack("!H", (kind << 9) | len(value)) + value


def inspection_rule_seeds():
    import json as _json
    seeds = {
        "dell-bmc": {"description": "Dell", "priority": 50,
                     "conditions": [{"op": "contains", "args": {"value": "{inventory[system_vendor][manufacturer]}", "regex": "(?i)dell"}}],
                     "actions": [{"op": "set-attribute", "args": {"path": "/driver_info/ipmi_address", "value": "{inventory[bmc_address]}"}},
                                 {"op": "add-trait", "args": {"name": "CUSTOM_DELL"}}]},
        "loop-ports": {"actions": [{"op": "set-port-attribute", "args": {"port_id": "{item[mac_address]}", "path": "/extra/nic", "value": "{item[name]}"},
                                    "loop": "{inventory[interfaces]}"}]},
        "conditions": {"conditions": [{"op": "!eq", "args": {"values": ["{inventory[cpu][count]}", 1]}},
                                      {"op": "in-net", "args": ["{inventory[bmc_address]}", "192.0.2.0/24"]},
                                      {"op": "is-empty", "args": {"value": "{inventory[nothing]}"}},
                                      {"op": "one-of", "args": {"value": "{inventory[cpu][architecture]}", "values": ["x86_64"]}, "loop": [1, 2], "multiple": "all"}],
                       "actions": [{"op": "set-capability", "args": {"name": "boot_mode", "value": "uefi"}},
                                   {"op": "set-plugin-data", "args": {"path": "a/b", "value": "{plugin_data}"}},
                                   {"op": "extend-attribute", "args": {"path": "/extra/tags", "value": "x", "unique": True}},
                                   {"op": "log", "args": ["{node.driver_info[ipmi_password]}", "warning"]}]},
        "sensitive-fail": {"sensitive": True, "actions": [{"op": "fail", "args": {"msg": "{inventory[bmc_password]}"}}]},
    }
    for name, body in seeds.items():
        put("inspection_rule", name, _json.dumps(body))


def lldp_seeds():
    fixture = os.path.join(HERE, "../../agent/src/inventory/lldp/lldpd-1.0.16.frame")
    with open(fixture, "rb") as f:
        lldpd = f.read()
    put("lldp", "lldpd-1.0.16", lldpd)
    head = bytes.fromhex("0180c200000e525400000001")
    pdu = (lldp_tlv(1, b"\x04" + bytes.fromhex("001c73aabbcc"))
           + lldp_tlv(2, b"\x05Ethernet12")
           + lldp_tlv(3, b"\x00\x78")
           + lldp_tlv(4, b"to node 12")
           + lldp_tlv(5, b"leaf-07.rack3")
           + lldp_tlv(8, bytes([5, 1, 10, 0, 0, 7, 2, 0, 0, 0, 1, 0]))
           + lldp_tlv(127, bytes.fromhex("0080c201") + struct.pack("!H", 100))
           + lldp_tlv(127, bytes.fromhex("0080c203") + struct.pack("!HB", 200, 7) + b"tenant1")
           + lldp_tlv(0, b""))
    put("lldp", "switch-vlans", head + b"\x88\xcc" + pdu)
    put("lldp", "switch-vlans-tagged", head + b"\x81\x00\x00\x64\x88\xcc" + pdu)
    put("lldp", "pdu-only", pdu)
    put("lldp", "network-address-ids", head + b"\x88\xcc" + lldp_tlv(1, b"\x05\x01\xc0\x00\x02\x01")
        + lldp_tlv(2, b"\x04\x02" + bytes(16)) + lldp_tlv(3, b"\x00\x04"))


# ---------------------------------------------------------------- in-band IPMI (/dev/ipmi0)
def inband(*answers):
    """Answers of the machine's BMC in the order the agent asks, each length-prefixed."""
    return b"".join(bytes([len(a)]) + a for a in answers)


def user_name(name):
    return b"\0" + name.ljust(16, b"\0")


def ipmi_inband_seeds():
    # As ipmi_sim 2.0.33 answers: IPMI 2.0, LAN channel 1 at 10.11.12.13, 63 users, user 2
    # "admin"; every unnamed slot is free.
    device_id = bytes([0, 0, 0x03, 0x09, 0x08, 0x02, 0x9F, 0x91, 0x12, 0, 0x02, 0x0F])
    lan_info = bytes([0, 0x01, 0x04, 0x01, 0x81, 0xF2, 0x1B, 0, 0, 0])
    lan_ip = bytes([0, 0x11, 10, 11, 12, 13])
    table = bytes([0, 0x3F, 0x01, 0x00, 0x00])
    free = bytes([0, 0x3F, 0x01, 0x00, 0x00])
    mac = bytes([0, 0x11, 0x52, 0x54, 0x00, 0xB3, 0xC0, 0x01])
    ok = b"\0"
    names = [user_name(b"admin")] + [user_name(b"")] * 61
    # New user in slot 3: names of 2..63, access of 3, name, password, enable, access, test.
    put("ipmi_inband", "sim-new-user", inband(device_id, lan_info, lan_ip, table, *names, free,
                                              ok, ok, ok, ok, ok, mac))
    # Reset of "ingot" in slot 3: the name search stops there; no Set User Name.
    put("ipmi_inband", "sim-reset", inband(device_id, lan_info, lan_ip, table, user_name(b"admin"),
                                           user_name(b"ingot"), ok, ok, ok, ok, mac))
    # IPMI 1.5, a system interface channel first, channel 2 LAN without an address, 4 users
    # all in use: no free slot.
    put("ipmi_inband", "v15-full", inband(bytes([0, 0x20, 0x01, 0x01, 0x00, 0x51]), bytes([0xCC]),
                                          lan_info.replace(b"\x01\x04", b"\x02\x04", 1),
                                          bytes([0, 0x11, 0, 0, 0, 0]), *[bytes([0xCB])] * 9,
                                          bytes([0, 0x04, 0x03, 0x01, 0x14]),
                                          user_name(b"root"), user_name(b""), user_name(b"ops"),
                                          bytes([0, 0x04, 0x03, 0x01, 0x12])))
    # A 2.0 BMC refusing the 20-byte password (0xc7), then taking 16 bytes.
    put("ipmi_inband", "twenty-refused", inband(device_id, lan_info, lan_ip, bytes([0, 0x03, 0, 1, 0]),
                                                user_name(b""), user_name(b""), free, ok,
                                                bytes([0xC7]), ok, ok, ok, ok, mac))
    # Set User Access refused: the new slot is undone.
    put("ipmi_inband", "access-refused", inband(device_id, lan_info, lan_ip, bytes([0, 0x02, 0, 1, 0]),
                                                user_name(b""), free, ok, ok, ok, bytes([0xD4]), ok, ok))
    # Single answers for the parsers.
    put("ipmi_inband", "user-access-all-bits", bytes([0, 0xFF, 0xFF, 0xFF, 0x74]))
    put("ipmi_inband", "lan-mac", mac)


# ---------------------------------------------------------------- md superblocks
def md_sb1(level, raid_disks, dev, super_offset, data_offset, data_size, size, chunk, resync,
           name=b"root", feature_map=0):
    """An md v1 superblock (struct mdp_superblock_1) with the kernel's checksum."""
    b = bytearray(4096)
    struct.pack_into("<IIII", b, 0, 0xA92B4EFC, 1, feature_map, 0)
    b[16:32] = bytes(range(16))
    b[32:32 + len(name)] = name
    struct.pack_into("<QIIQII", b, 64, 1700000000, level, 0, size, chunk, raid_disks)
    struct.pack_into("<QQQQII", b, 128, data_offset, data_size, super_offset, 0, dev, 0)
    b[168:184] = bytes([dev + 1] * 16)
    struct.pack_into("<QQQII", b, 192, 1700000000, 1, resync, 0, raid_disks)
    for i in range(raid_disks):
        struct.pack_into("<H", b, 256 + 2 * i, i)
    n = 256 + 2 * raid_disks
    total = sum(struct.unpack_from("<%dI" % (n // 4), b, 0))
    if n % 4:
        total += struct.unpack_from("<H", b, n - 2)[0]
    struct.pack_into("<I", b, 216, ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF)
    return bytes(b)


def md_superblock_seeds():
    put("md_superblock", "raid1-v1.0-member0",
        md_sb1(1, 2, 0, 2097136, 0, 2096872, 2096872, 0, 0))
    put("md_superblock", "raid0-v1.2-member2-of-3",
        md_sb1(0, 3, 2, 8, 2048, 2097152, 2097152, 1024, 0xFFFFFFFFFFFFFFFF, name=b"data"))
    put("md_superblock", "raid1-bitmap", md_sb1(1, 2, 1, 8, 2048, 4096, 4096, 0, 0,
                                                 feature_map=1))
    put("md_superblock", "v0.90-magic", struct.pack("<IIII", 0xA92B4EFC, 0, 90, 0) + bytes(60))


# ---------------------------------------------------------------- image Range headers
def image_range_seeds():
    # First byte: the file's length / 3; the rest: the Range value a downloader sends.
    put("image_range", "part", b"\x64bytes=0-9")
    put("image_range", "open", b"\x64bytes=250-")
    put("image_range", "suffix", b"\x64bytes=-10")
    put("image_range", "empty-file", b"\x00bytes=0-0")
    put("image_range", "several", b"\x10bytes=0-1, 5-6")


if __name__ == "__main__":
    dhcp_seeds()
    tftp_seeds()
    ipmi_seeds()
    redfish_seeds()
    api_seeds()
    agent_seeds()
    image_seeds()
    lldp_seeds()
    inspection_rule_seeds()
    ipmi_inband_seeds()
    md_superblock_seeds()
    image_range_seeds()
    print("seeds written under", HERE)
