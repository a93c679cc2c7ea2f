//! Tests of the layered configuration.

use super::*;

/// Every example config under `controller/tests/configs/` loads and validates, and the
/// README shows the same text, so the documentation cannot rot.
#[test]
fn example_configs_load_and_match_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("README");
    let dir = root.join("tests/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert!(
            readme.contains(&body),
            "{} is not the README's example",
            path.display()
        );
        FileConfig::load(Some(&path))
            .and_then(FileConfig::validate)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn defaults_are_valid() {
    let c = FileConfig::default().validate().expect("valid");
    assert_eq!(c.api_listen.to_string(), "127.0.0.1:6385");
    assert!(c.database.starts_with("sqlite://"));
    assert!(c.database.ends_with("ingot.db"));
    assert_eq!(c.max_concurrent_deploys, 16);
}

#[test]
fn flags_override_file() {
    let file = FileConfig {
        api_listen: Some("0.0.0.0:1".into()),
        database: Some("sqlite:///x.db".into()),
        ..Default::default()
    };
    let flags = FileConfig {
        api_listen: Some("127.0.0.1:9".into()),
        ..Default::default()
    };
    let c = file.overlay(flags).validate().expect("valid");
    assert_eq!(c.api_listen.to_string(), "127.0.0.1:9");
    assert_eq!(c.database, "sqlite:///x.db");
}

#[test]
fn toml_file_and_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ingot.toml");
    std::fs::write(
        &p,
        "api_listen = \"127.0.0.1:7000\"\n[conductor]\nmax_concurrent_deploys = 2\n",
    )
    .expect("write");
    let c = FileConfig::load(Some(&p))
        .expect("load")
        .validate()
        .expect("valid");
    assert_eq!(c.api_listen.port(), 7000);
    assert_eq!(c.max_concurrent_deploys, 2);

    std::fs::write(&p, "bogus = 1\n").expect("write");
    let err = FileConfig::load(Some(&p)).expect_err("unknown key");
    assert!(format!("{err:#}").contains("bogus"), "{err:#}");
}

#[test]
fn only_configuration_variables_are_read_from_the_environment() {
    let known = file_keys();
    for k in [
        "api_listen",
        "database",
        "state_dir",
        "conductor_name",
        "max_body_bytes",
        "conductor",
        "netboot",
        "discovery",
        "enabled_hardware_types",
        "qemu",
        "max_image_virtual_size",
        "deploy",
    ] {
        assert!(known.iter().any(|x| x == k), "{k} missing from {known:?}");
    }
    let cases = [
        ("api_listen", true),
        ("API_LISTEN", true),
        ("conductor.max_concurrent_deploys", true),
        ("conductor.typo", true),
        ("netboot.mode", true),
        ("deploy.fast_track", true),
        ("url", false),
        ("python", false),
        ("log", false),
        ("config", false),
        ("clients_endpoint", false),
        ("lab_chassis", false),
        ("conductor_typo", false),
    ];
    for (key, want) in cases {
        assert_eq!(is_config_env_key(key, &known), want, "{key}");
    }
}

#[test]
fn auth_settings() {
    let lo: SocketAddr = "127.0.0.1:6385".parse().expect("addr");
    let any: SocketAddr = "0.0.0.0:6385".parse().expect("addr");
    let v6lo: SocketAddr = "[::1]:6385".parse().expect("addr");
    assert_eq!(
        auth_config(None, None, false, lo).expect("ok"),
        AuthConfig::NoAuth
    );
    assert_eq!(
        auth_config(None, None, false, v6lo).expect("ok"),
        AuthConfig::NoAuth
    );
    let err = format!(
        "{:#}",
        auth_config(None, None, false, any).expect_err("open")
    );
    assert!(err.contains("not a loopback address"), "{err}");
    assert_eq!(
        auth_config(Some("noauth"), None, true, any).expect("allowed"),
        AuthConfig::NoAuth
    );
    assert_eq!(
        auth_config(
            Some("http_basic"),
            Some("/etc/ingot/htpasswd".into()),
            false,
            any
        )
        .expect("basic"),
        AuthConfig::HttpBasic("/etc/ingot/htpasswd".into())
    );
    assert!(auth_config(Some("http_basic"), None, false, lo).is_err());
    assert!(auth_config(Some("keystone"), None, false, lo).is_err());
    // Through the environment-free file path: the keys are top-level.
    let known = file_keys();
    for k in [
        "auth_strategy",
        "http_basic_auth_user_file",
        "allow_insecure_noauth",
    ] {
        assert!(known.iter().any(|x| x == k), "{k}");
    }
}

#[test]
fn bad_values_are_clear_errors() {
    let bad = FileConfig {
        api_listen: Some("nonsense".into()),
        ..Default::default()
    };
    assert!(format!("{:#}", bad.validate().expect_err("bad")).contains("ADDR:PORT"));
    let bad = FileConfig {
        database: Some("mysql://x".into()),
        ..Default::default()
    };
    assert!(bad.validate().is_err());
    let bad = FileConfig {
        conductor: ConductorSection {
            max_concurrent_deploys: Some(0),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(bad.validate().is_err());
    let missing = FileConfig::load(Some(Path::new("/nonexistent/ingot.toml")));
    assert!(missing.is_err());
}

/// Fast track is off unless asked for, in the file or a flag (flags win; the environment
/// is the same layer as the file, `INGOT_DEPLOY__FAST_TRACK`, see the test above).
#[test]
fn fast_track_is_opt_in() {
    assert_eq!(
        FileConfig::default().validate().expect("valid").fast_track,
        None
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ingot.toml");
    std::fs::write(&p, "[deploy]\nfast_track = true\n").expect("write");
    let file = FileConfig::load(Some(&p)).expect("load");
    let on = file.clone().validate().expect("valid");
    assert_eq!(on.fast_track, Some(Duration::from_secs(300)));
    let flags = FileConfig {
        deploy: DeploySection {
            fast_track: None,
            fast_track_timeout_secs: Some(20),
        },
        ..Default::default()
    };
    let c = file.clone().overlay(flags).validate().expect("valid");
    assert_eq!(c.fast_track, Some(Duration::from_secs(20)));
    let flags = FileConfig {
        deploy: DeploySection {
            fast_track: Some(false),
            fast_track_timeout_secs: None,
        },
        ..Default::default()
    };
    assert_eq!(
        file.overlay(flags).validate().expect("valid").fast_track,
        None
    );
    let bad = FileConfig {
        deploy: DeploySection {
            fast_track: Some(true),
            fast_track_timeout_secs: Some(0),
        },
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn hardware_types_default_without_qemu_and_qemu_needs_its_directory() {
    let c = FileConfig::default().validate().expect("valid");
    assert_eq!(
        c.enabled_hardware_types,
        vec!["ipmi", "redfish", "manual", "fake-hardware"]
    );
    assert_eq!(c.qemu_allowed_dir, None);
    let with = |types: &[&str], dir: Option<&str>| FileConfig {
        enabled_hardware_types: Some(types.iter().map(|t| (*t).to_owned()).collect()),
        qemu: QemuSection {
            allowed_dir: dir.map(PathBuf::from),
        },
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        with(&["qemu"], None).validate().expect_err("no dir")
    );
    assert!(err.contains("[qemu] allowed_dir"), "{err}");
    let err = format!(
        "{:#}",
        with(&["qemu"], Some("vms")).validate().expect_err("rel")
    );
    assert!(err.contains("absolute"), "{err}");
    let err = format!(
        "{:#}",
        with(&["ilo"], None).validate().expect_err("unknown")
    );
    assert!(err.contains("unknown hardware type \"ilo\""), "{err}");
    assert!(with(&[], None).validate().is_err());
    let mut discovering = with(&["ipmi"], None);
    discovering.discovery.enabled = Some(true);
    let err = format!("{:#}", discovering.validate().expect_err("manual is off"));
    assert!(err.contains("default_driver \"manual\""), "{err}");
    let c = with(&["qemu", "ipmi"], Some("/srv/vms"))
        .validate()
        .expect("valid");
    assert_eq!(c.enabled_hardware_types, vec!["qemu", "ipmi"]);
    assert_eq!(c.qemu_allowed_dir, Some(PathBuf::from("/srv/vms")));

    // From the file (the environment and flags: tests/it/serve_hardening.rs).
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ingot.toml");
    std::fs::write(
        &p,
        "enabled_hardware_types = [\"manual\"]\n[qemu]\nallowed_dir = \"/srv/vms\"\n",
    )
    .expect("write");
    let c = FileConfig::load(Some(&p))
        .expect("load")
        .validate()
        .expect("valid");
    assert_eq!(c.enabled_hardware_types, vec!["manual"]);
    std::fs::write(&p, "enabled_hardware_types = \"ipmi, manual\"\n").expect("write");
    let c = FileConfig::load(Some(&p))
        .expect("load")
        .validate()
        .expect("valid");
    assert_eq!(c.enabled_hardware_types, vec!["ipmi", "manual"]);
}

#[test]
fn netboot_and_discovery_sections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ingot.toml");
    std::fs::write(
        &p,
        r#"
[netboot]
http_listen = "127.0.0.1:8080"
agent_kernel = "/k"
agent_kernel_args = ["ingot.lldp_timeout=5", "panic=30"]
[discovery]
enabled = true
allowed_subnets = ["192.0.2.0/24"]
rate_per_minute = 5
[[discovery.rules]]
conditions = [{ field = "cpu.architecture", op = "eq", value = "x86_64" }]
actions = [{ action = "add_trait", value = "CUSTOM_X" }, { action = "manage" }]
"#,
    )
    .expect("write");
    let c = FileConfig::load(Some(&p))
        .expect("load")
        .validate()
        .expect("valid");
    assert_eq!(
        c.boot_http_listen,
        Some("127.0.0.1:8080".parse().expect("addr"))
    );
    assert_eq!(c.agent_kernel, PathBuf::from("/k"));
    assert_eq!(c.agent_kernel_args, ["ingot.lldp_timeout=5", "panic=30"]);
    assert!(c.discovery.enabled);
    assert_eq!(c.discovery.rate_per_minute, 5);
    assert_eq!(c.discovery.rules.len(), 1);
    for arg in ["ingot.token=abc", "a b", ""] {
        let bad = FileConfig {
            netboot: NetbootSection {
                agent_kernel_args: Some(vec![arg.into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = bad.validate().expect_err(arg).to_string();
        assert!(e.contains("agent_kernel_args"), "{arg}: {e}");
    }
    let bad = FileConfig {
        discovery: DiscoverySection {
            allowed_subnets: Some(vec!["nope".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn agent_files_default_beside_an_installed_ingot() {
    let installed = |p: &Path| p == Path::new("/usr/lib/ingot/agent/vmlinuz");
    let nothing = |_: &Path| false;
    let dev = (
        PathBuf::from("target/initramfs/qemu/vmlinuz"),
        PathBuf::from("target/initramfs/qemu/initramfs.cpio.zst"),
    );
    type Row<'a> = (
        Option<&'a str>,
        &'a dyn Fn(&Path) -> bool,
        (PathBuf, PathBuf),
    );
    let rows: [Row<'_>; 5] = [
        (
            Some("/usr/bin/ingot"),
            &installed,
            (
                PathBuf::from("/usr/lib/ingot/agent/vmlinuz"),
                PathBuf::from("/usr/lib/ingot/agent/initramfs.cpio.zst"),
            ),
        ),
        // Installed binary, files missing: the development default (and a clear error later).
        (Some("/usr/bin/ingot"), &nothing, dev.clone()),
        // A development build is not under a `bin` directory.
        (Some("/work/target/debug/ingot"), &installed, dev.clone()),
        (Some("/opt/ingot/bin/ingot"), &installed, dev.clone()),
        (None, &installed, dev.clone()),
    ];
    for (exe, exists, want) in rows {
        assert_eq!(
            default_agent_files(exe.map(Path::new), exists),
            want,
            "{exe:?}"
        );
    }
}

/// The Debian package's example config (`packaging/ingot.toml`): as shipped it validates,
/// and with every setting line uncommented it still parses (so every key it shows is real)
/// and sets every key `FileConfig` has (so none is missing from it).
#[test]
fn packaged_example_config_lists_every_setting() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ingot.toml");
    let text = std::fs::read_to_string(&path).expect("packaging/ingot.toml");
    let parse = |t: &str| -> FileConfig {
        use figment::providers::Format as _;
        Figment::new()
            .merge(figment::providers::Toml::string(t))
            .extract()
            .unwrap_or_else(|e| panic!("{e}\n{t}"))
    };
    let shipped = parse(&text);
    assert_eq!(
        shipped.state_dir.as_deref(),
        Some(Path::new("/var/lib/ingot"))
    );
    shipped.validate().expect("the shipped example validates");

    let all: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|_| !l.starts_with("##"))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let every = serde_json::to_value(parse(&all)).expect("json");
    let defaults = serde_json::to_value(FileConfig::default()).expect("json");
    fn missing(
        default: &serde_json::Value,
        got: &serde_json::Value,
        at: &str,
        out: &mut Vec<String>,
    ) {
        match default.as_object() {
            Some(keys) if !keys.is_empty() => {
                for (k, d) in keys {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    missing(d, &got[k.as_str()], &path, out);
                }
            }
            _ => {
                let empty = got.is_null()
                    || got.as_array().is_some_and(Vec::is_empty)
                    || got.as_object().is_some_and(serde_json::Map::is_empty);
                if empty {
                    out.push(at.to_owned());
                }
            }
        }
    }
    let mut absent = Vec::new();
    missing(&defaults, &every, "", &mut absent);
    assert!(
        absent.is_empty(),
        "packaging/ingot.toml does not show these settings: {absent:?}"
    );
}

/// `[tls]` always covers the API; the provisioning side gets its HTTPS listener only when
/// there is a provisioning side, and a half `[tls]` is refused.
#[test]
fn tls_covers_the_api_and_the_provisioning_side_when_there_is_one() {
    let tls = TlsSection {
        cert_file: Some("/etc/ingot/server.pem".into()),
        key_file: Some("/etc/ingot/server.key".into()),
    };
    let api_only = FileConfig {
        tls: tls.clone(),
        ..Default::default()
    }
    .validate()
    .expect("[tls] without a provisioning side");
    let t = api_only.tls.expect("tls");
    assert_eq!(t.cert_file, PathBuf::from("/etc/ingot/server.pem"));
    assert_eq!(t.provisioning_listen, None);

    let both = FileConfig {
        tls: tls.clone(),
        netboot: NetbootSection {
            server_ip: Some("172.31.250.1".parse().expect("ip")),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .expect("[tls] with a server_ip");
    assert_eq!(
        both.tls.and_then(|t| t.provisioning_listen),
        Some("172.31.250.1:8443".parse().expect("addr"))
    );

    let half = FileConfig {
        tls: TlsSection {
            key_file: None,
            ..tls
        },
        ..Default::default()
    }
    .validate()
    .expect_err("cert without key");
    assert!(format!("{half:#}").contains("both cert_file and key_file"));
}
