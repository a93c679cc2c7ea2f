//! The flows themselves.

use std::time::Duration;

use controller::config::DiscoverySection;
use controller::store::PortQuery;
use proto::protocol::{Command, ConfigDrive, Report};
use proto::{AgentEvent, ErrorReport, Phase, ProgressEvent, WipeMode};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::*;

pub fn manage_rules() -> DiscoverySection {
    DiscoverySection {
        enabled: Some(true),
        rules: rules(json!([
            {"description": "x86 to manageable",
             "conditions": [{"field": "cpu.architecture", "op": "eq", "value": "x86_64"},
                            {"field": "memory.total", "op": "ge", "value": 1_073_741_824u64}],
             "actions": [{"action": "add_trait", "value": "CUSTOM_DISCOVERED"},
                         {"action": "set_resource_class", "value": "baremetal"},
                         {"action": "manage"}]},
            {"conditions": [{"field": "cpu.architecture", "op": "eq", "value": "aarch64"}],
             "actions": [{"action": "add_trait", "value": "CUSTOM_ARM"}]}
        ])),
        ..Default::default()
    }
}

pub fn ok() -> Report {
    Report::Succeeded {
        inventory: None,
        detail: None,
    }
}

/// The result of a whole-machine wipe that wiped the one disk of [`inventory`] (matched by
/// its serial, as a real agent reports it).
pub fn wiped() -> Report {
    let report = proto::WipeReport {
        ok: true,
        disks: vec![proto::WipeDiskResult {
            device: "/dev/vda".into(),
            mode: WipeMode::Metadata,
            ok: true,
            method: Some("signatures".into()),
            cleared: vec![],
            skipped: None,
            error: None,
            elapsed_ms: 5,
            id: proto::DiskId {
                serial: Some(DISK_SERIAL.into()),
                ..Default::default()
            },
        }],
    };
    Report::Succeeded {
        inventory: None,
        detail: serde_json::to_value(report).ok(),
    }
}

pub fn failed(msg: &str, cause: &str) -> Report {
    Report::Failed {
        error: ErrorReport {
            phase: None,
            message: msg.into(),
            causes: vec![cause.into()],
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_machine_is_enrolled_and_known_one_found_again() {
    let env = start(manage_rules()).await;
    let req = lookup_req(
        &["52:54:00:aa:00:01", "52:54:00:aa:00:02"],
        "SER 1",
        "4C4C4544-0000-1111-2222-333344445555",
    );
    let first = env.lookup(&req).await;
    assert!(first.discovered);
    let first_token = first
        .token
        .clone()
        .expect("a discovered machine's session begins");
    assert_eq!(first.heartbeat_timeout_secs, 1);
    let id = first.node_uuid;

    let node = env.wait_state(id, "manageable").await;
    assert_eq!(node["name"], "node-ser-1");
    assert_eq!(node["driver"], "manual");
    assert_eq!(node["resource_class"], "baremetal");
    assert_eq!(node["properties"]["cpus"], 4);
    assert_eq!(node["properties"]["memory_mb"], 4096);
    assert_eq!(node["properties"]["local_gb"], 19);
    assert_eq!(node["properties"]["cpu_arch"], "x86_64");
    let (s, traits) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/traits"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(traits["traits"], json!(["CUSTOM_DISCOVERED"]));
    let stored = env
        .services
        .store
        .get_node_by_uuid(id)
        .await
        .expect("get")
        .expect("node");
    assert!(stored.discovered);
    assert!(
        env.services
            .hub
            .is_live(id, &controller::hub::hash_token(&first_token))
            .await
            .expect("session"),
        "the agent's session is live"
    );
    assert!(
        !serde_json::to_string(&stored.driver_internal_info)
            .expect("json")
            .contains(&first_token),
        "the token itself is never stored"
    );
    let ports = env
        .services
        .store
        .list_ports(&PortQuery {
            node_uuid: Some(id),
            ..Default::default()
        })
        .await
        .expect("ports");
    let mut macs: Vec<_> = ports.iter().map(|p| p.address.clone()).collect();
    macs.sort();
    assert_eq!(macs, vec!["52:54:00:aa:00:01", "52:54:00:aa:00:02"]);

    let (s, inv) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/inventory"), None)
        .await;
    assert_eq!(s, 200, "{inv}");
    assert_eq!(inv["inventory"]["cpu"]["architecture"], "x86_64");
    assert_eq!(
        inv["inventory"]["interfaces"][0]["mac_address"],
        "52:54:00:aa:00:01"
    );
    assert_eq!(inv["plugin_data"], json!({}));

    // Token checks: missing, garbage; a later lookup brings no token: the agent of the live
    // session keeps its own, anyone else is refused.
    assert_eq!(env.heartbeat_raw(id, None).await.status(), 401);
    assert_eq!(env.heartbeat_raw(id, Some("nope")).await.status(), 401);
    assert_eq!(
        env.heartbeat_raw(id, Some(&first_token)).await.status(),
        200
    );
    let second = lookup_req(&["52:54:00:aa:00:02"], "SER 1", "x");
    assert_eq!(env.lookup_raw(&second).await.status(), 409);
    let r = env.lookup_as(&second, Some(&first_token)).await;
    assert_eq!(r.status(), 200);
    let again: LookupResponse = r.json().await.expect("json");
    assert_eq!(again.node_uuid, id);
    assert!(!again.discovered);
    assert_eq!(again.token, None);
    assert_eq!(
        env.heartbeat_raw(id, Some(&first_token)).await.status(),
        200
    );
    // By SMBIOS UUID alone (a NIC we never saw).
    let r = env
        .lookup_as(
            &lookup_req(
                &["52:54:00:aa:00:09"],
                "",
                "4c4c4544-0000-1111-2222-333344445555",
            ),
            Some(&first_token),
        )
        .await;
    assert_eq!(r.status(), 200);
    let by_uuid: LookupResponse = r.json().await.expect("json");
    assert_eq!(by_uuid.node_uuid, id);
    assert_eq!(by_uuid.token, None);
    // A busy agent's heartbeat is a keep-alive answered at once.
    let busy = env
        .http
        .post(format!("{}{}", env.boot, proto::protocol::PATH_HEARTBEAT))
        .header(proto::protocol::TOKEN_HEADER, &first_token)
        .json(&proto::protocol::HeartbeatRequest {
            node_uuid: id,
            state: proto::protocol::AgentState::Busy {
                command_id: Uuid::new_v4(),
            },
        })
        .send()
        .await
        .expect("busy");
    let hb: proto::protocol::HeartbeatResponse = busy.json().await.expect("json");
    assert_eq!(hb.command, Command::Wait { seconds: 5 });
    // A report for a command never handed out.
    assert_eq!(
        env.report(id, &first_token, Uuid::new_v4(), ok()).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subnets_rate_limit_and_disabled_discovery() {
    let env = start(DiscoverySection {
        enabled: Some(true),
        allowed_subnets: Some(vec!["192.0.2.0/24".into()]),
        ..Default::default()
    })
    .await;
    let r = env
        .lookup_raw(&lookup_req(&["52:54:00:bb:00:01"], "A", "u1"))
        .await;
    assert_eq!(r.status(), 403);
    assert!(
        env.services
            .store
            .list_nodes(&Default::default())
            .await
            .expect("list")
            .is_empty()
    );

    let env = start(DiscoverySection {
        enabled: Some(true),
        allowed_subnets: Some(vec!["127.0.0.0/8".into()]),
        rate_per_minute: Some(0),
        burst: Some(1),
        ..Default::default()
    })
    .await;
    let first = env
        .lookup(&lookup_req(&["52:54:00:bb:00:02"], "B", "u2"))
        .await;
    assert!(first.discovered);
    let r = env
        .lookup_raw(&lookup_req(&["52:54:00:bb:00:03"], "C", "u3"))
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // A known machine is not held by discovery's rate limit.
    let r = env
        .lookup_as(
            &lookup_req(&["52:54:00:bb:00:02"], "B", "u2"),
            first.token.as_deref(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let known: LookupResponse = r.json().await.expect("json");
    assert_eq!(known.node_uuid, first.node_uuid);

    let env = start(DiscoverySection::default()).await;
    let r = env
        .lookup_raw(&lookup_req(&["52:54:00:bb:00:04"], "D", "u4"))
        .await;
    assert_eq!(r.status(), 404);
    let mut bad = lookup_req(&["52:54:00:bb:00:05"], "E", "u5");
    bad.protocol_version = 99;
    assert_eq!(env.lookup_raw(&bad).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_track_clean_deploy_and_failures() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:cc:00:01"], "F1", "uf1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;

    // provide -> cleaning hands `wipe metadata` to the heartbeating agent.
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "provide"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::Wipe {
            mode: WipeMode::Metadata,
            devices: vec![]
        }
    );
    env.wait_state(id, "clean wait").await;
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
    // Fast track: no PXE boot, reboot or power-off around the cleaning.
    let manual = env
        .services
        .conductor
        .registry()
        .manual_hardware()
        .expect("manual")
        .clone();
    let texts = |m: &controller::drivers::manual::ManualHardware| -> Vec<String> {
        m.instructions()
            .into_iter()
            .filter(|i| i.node == id)
            .map(|i| i.text)
            .collect()
    };
    assert_eq!(
        texts(&manual),
        vec!["agent: run clean step erase_devices_metadata".to_owned()]
    );

    // deploy: image, bare-hex checksum, root device hints, config drive object.
    let sum = "ab".repeat(32);
    let (s, b) = env
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": sum},
                {"op": "add", "path": "/properties/root_device", "value": {"serial": "DISK1"}}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "active", "configdrive": {"meta_data": {"hostname": "h1"}, "user_data": "#cloud-config\n"}})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    let Command::Deploy(d) = cmd else {
        panic!("not a deploy: {cmd:?}")
    };
    assert_eq!(d.image_url, "http://127.0.0.1:9/os.raw.zst");
    assert_eq!(d.checksum, format!("sha256:{sum}"));
    assert_eq!(d.root_device_hints.serial.as_deref(), Some("DISK1"));
    let Some(ConfigDrive::Parts {
        meta_data,
        user_data,
        ..
    }) = d.configdrive
    else {
        panic!("config drive parts expected")
    };
    assert_eq!(meta_data["hostname"], "h1");
    assert_eq!(user_data.as_deref(), Some("#cloud-config\n"));
    env.wait_state(id, "wait call-back").await;
    let progress = Report::Event {
        event: AgentEvent::Progress(ProgressEvent {
            phase: Phase::Stream,
            bytes_fetched: 1000,
            bytes_written: 4000,
            bytes_total: Some(2000),
            rate_bps: 123_456,
            elapsed_ms: 10,
        }),
    };
    assert_eq!(env.report(id, &token, cmd_id, progress).await, 204);
    let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
    let p = &n["driver_internal_info"]["agent_progress"];
    assert_eq!(p["phase"], "stream");
    assert_eq!(p["bytes_written"], 4000);
    assert_eq!(p["rate_bps"], 123_456);
    assert_eq!(env.report(id, &token, cmd_id, ok()).await, 204);
    env.wait_state(id, "active").await;
    assert_eq!(
        texts(&manual)[1..],
        [
            "agent: deploy the instance image".to_owned(),
            format!("boot node {id} from disk (always)"),
            format!("reboot (power cycle) node {id}"),
        ]
    );
    let (s, bd) = env
        .api(
            Method::GET,
            &format!("/v1/nodes/{id}/management/boot_device"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{bd}");
    assert_eq!(bd, json!({"boot_device": "disk", "persistent": true}));
    let (_, script) = boot_script(&env, "52:54:00:cc:00:01").await;
    assert!(script.contains("sanboot"), "{script}");

    // undeploy -> cleaning; a failed wipe lands in `clean failed` with the agent's text.
    let (s, _) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "deleted"})),
        )
        .await;
    assert_eq!(s, 202);
    // The machine rebooted into its instance, so cleaning boots the agent again: the old
    // token is dead and the agent of the new boot gets a new one.
    env.wait_state(id, "clean wait").await;
    assert_eq!(env.heartbeat_raw(id, Some(&token)).await.status(), 401);
    let (_, token) = env
        .session(&lookup_req(&["52:54:00:cc:00:01"], "F1", "uf1"))
        .await;
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(
        matches!(
            cmd,
            Command::Wipe {
                mode: WipeMode::Metadata,
                ..
            }
        ),
        "{cmd:?}"
    );
    assert_eq!(
        env.report(id, &token, cmd_id, failed("wipe failed on /dev/vda", "EIO"))
            .await,
        204
    );
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("wipe failed on /dev/vda: EIO"), "{err}");
    let (_, script) = boot_script(&env, "52:54:00:cc:00:01").await;
    assert!(script.trim_end().ends_with("exit"), "{script}");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_clean_full_erase_and_deploy_checksum_failure() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:dd:00:01"], "G1", "ug1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::Wipe {
            mode: WipeMode::Secure,
            devices: vec![]
        }
    );
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "manageable").await;

    let (s, _) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "provide"})),
        )
        .await;
    assert_eq!(s, 202);
    let (cmd_id, _) = env.next_command(id, &token).await;
    assert_eq!(env.report(id, &token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
    let (s, _) = env
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": format!("md5:{}", "c".repeat(32))}
            ])),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "active", "configdrive": "H4sIAAAAAAAAAwMAAAAAAAAAAAA="})),
        )
        .await;
    assert_eq!(s, 202);
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    let Command::Deploy(d) = cmd else {
        panic!("not a deploy")
    };
    assert_eq!(d.checksum, format!("md5:{}", "c".repeat(32)));
    assert_eq!(
        d.configdrive,
        Some(ConfigDrive::GzipBase64 {
            data: "H4sIAAAAAAAAAwMAAAAAAAAAAAA=".into()
        })
    );
    env.wait_state(id, "wait call-back").await;
    let r = failed("checksum mismatch", "expected md5:cccc, got md5:0000");
    assert_eq!(env.report(id, &token, cmd_id, r).await, 204);
    let n = env.wait_state(id, "deploy failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("checksum mismatch: expected md5:cccc, got md5:0000"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_refreshes_inventory_and_adds_ports() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:ee:00:01"], "H1", "uh1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "inspect"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    env.wait_state(id, "inspect wait").await;
    let mut inv = inventory(&["52:54:00:ee:00:01", "52:54:00:ee:00:02"], "H1");
    inv.cpu.count = 16;
    inv.cpu.architecture = "aarch64".into();
    // The second NIC heard its switch over LLDP.
    inv.interfaces[1].lldp = Some(proto::LldpNeighbor {
        chassis_id: "00:1c:73:aa:bb:cc".into(),
        chassis_id_subtype: 4,
        port_id: "Ethernet12".into(),
        port_id_subtype: 5,
        ttl: 120,
        system_name: Some("leaf-07".into()),
        ..Default::default()
    });
    let report = Report::Succeeded {
        inventory: Some(Box::new(inv)),
        detail: None,
    };
    assert_eq!(env.report(id, &token, cmd_id, report).await, 204);
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["properties"]["cpus"], 16);
    assert_eq!(n["properties"]["cpu_arch"], "aarch64");
    assert!(n["inspection_finished_at"].is_string(), "{n}");
    let ports = env
        .services
        .store
        .list_ports(&PortQuery {
            node_uuid: Some(id),
            ..Default::default()
        })
        .await
        .expect("ports");
    assert_eq!(ports.len(), 2);
    let (_, port) = env
        .api(
            Method::GET,
            "/v1/ports/detail?address=52:54:00:ee:00:02",
            None,
        )
        .await;
    assert_eq!(
        port["ports"][0]["local_link_connection"],
        json!({"switch_id": "00:1c:73:aa:bb:cc", "port_id": "Ethernet12", "switch_info": "leaf-07"}),
        "{port}"
    );
    let (_, port) = env
        .api(
            Method::GET,
            "/v1/ports/detail?address=52:54:00:ee:00:01",
            None,
        )
        .await;
    assert_eq!(
        port["ports"][0]["local_link_connection"],
        json!({}),
        "{port}"
    );
    let (_, inv) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/inventory"), None)
        .await;
    assert_eq!(inv["inventory"]["cpu"]["count"], 16);
    let (_, traits) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/traits"), None)
        .await;
    assert_eq!(traits["traits"], json!(["CUSTOM_DISCOVERED", "CUSTOM_ARM"]));
    // The agent stays up (fast track): a heartbeat is answered `wait` after the long poll.
    let started = std::time::Instant::now();
    let r = env.heartbeat_raw(id, Some(&token)).await;
    assert_eq!(r.status(), 200);
    let hb: proto::protocol::HeartbeatResponse = r.json().await.expect("hb");
    assert_eq!(hb.command, Command::Wait { seconds: 1 });
    assert!(started.elapsed() >= Duration::from_millis(900));
}

async fn boot_script(env: &Env, mac: &str) -> (u16, String) {
    let r = env
        .http
        .get(format!("{}/boot/ipxe?mac={mac}&platform=pcbios", env.boot))
        .send()
        .await
        .expect("script");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_scripts_and_ranged_downloads() {
    let env = start(manage_rules()).await;
    let (s, script) = boot_script(&env, "52:54:00:ff:00:01").await;
    assert_eq!(s, 200);
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "kernel {}/boot/vmlinuz initrd=initramfs.cpio.zst",
            "http://127.0.0.1:8080"
        )) || script.contains("/boot/vmlinuz initrd=initramfs.cpio.zst"),
        "{script}"
    );
    assert!(script.contains(" ingot.url=http://"), "{script}");
    assert!(script.contains("initrd http://"), "{script}");
    // Another live replica: its agent URL goes into the script too, a dead one's not.
    let now = chrono::Utc::now();
    for (name, url, age) in [
        ("replica-b", "http://10.9.0.2:8080", 0),
        ("replica-gone", "http://10.9.0.3:8080", 3600),
    ] {
        env.services
            .store
            .register_conductor(&controller::model::ConductorRecord {
                hostname: name.into(),
                conductor_group: String::new(),
                drivers: vec!["manual".into()],
                listen: vec![format!("url {url}")],
                version: "0".into(),
                online: true,
                started_at: now,
                created_at: now,
                updated_at: now - chrono::Duration::seconds(age),
            })
            .await
            .expect("register");
    }
    let (_, script) = boot_script(&env, "52:54:00:ff:00:01").await;
    assert!(
        script.contains(" ingot.url=http://10.9.0.2:8080"),
        "{script}"
    );
    assert!(!script.contains("10.9.0.3"), "{script}");
    assert!(!script.to_lowercase().contains("token"), "{script}");
    // Known node needing the agent (manageable, fast track) -> agent.
    let lr = env
        .lookup(&lookup_req(&["52:54:00:ff:00:02"], "I1", "ui1"))
        .await;
    env.wait_state(lr.node_uuid, "manageable").await;
    let (_, script) = boot_script(&env, "52:54:00:ff:00:02").await;
    assert!(script.contains("kernel "), "{script}");
    assert_eq!(boot_script(&env, "garbage").await.0, 400);

    // Discovery off: an unknown machine is sent back to its firmware.
    let off = start(DiscoverySection::default()).await;
    let (_, script) = boot_script(&off, "52:54:00:ff:00:03").await;
    assert!(
        script.trim_end().ends_with("exit") && !script.contains("kernel"),
        "{script}"
    );

    // Kernel with Range.
    let want = std::fs::read(env.kernel_path()).expect("kernel");
    let r = env
        .http
        .get(format!("{}/boot/vmlinuz", env.boot))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("bytes").as_ref(), &want[100..200]);
    let r = env
        .http
        .get(format!("{}/boot/initramfs.cpio.zst", env.boot))
        .send()
        .await
        .expect("initrd");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("bytes").len(), 1000);
}

/// Sets a node's provision state straight in the store (a conductor task caught midway).
async fn force_state(env: &Env, id: Uuid, state: &str) {
    let store = &env.services.store;
    let mut n = store
        .get_node_by_uuid(id)
        .await
        .expect("read")
        .expect("node");
    n.provision_state = state.to_owned();
    store.update_node(&n).await.expect("write");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_before_the_wait_state_is_saved_is_kept() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:ee:00:07"], "H7", "uh7"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "inspect"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(cmd, Command::Inspect);
    env.wait_state(id, "inspect wait").await;
    // A fast agent answers while the conductor has not saved `inspect wait` yet.
    force_state(&env, id, "inspecting").await;
    let report = Report::Succeeded {
        inventory: Some(Box::new(inventory(&["52:54:00:ee:00:07"], "H7"))),
        detail: None,
    };
    let (status, ()) = tokio::join!(env.report(id, &token, cmd_id, report), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        force_state(&env, id, "inspect wait").await;
    });
    assert_eq!(status, 204);
    let n = env.wait_state(id, "manageable").await;
    assert!(n["inspection_finished_at"].is_string(), "{n}");
    assert!(n["last_error"].is_null(), "{n}");
}
