use chrono::Utc;
use serde_json::json;

use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ user@host";

#[test]
fn requests_are_checked() {
    let ok = parse_request(&json!({
        "name": "web-1", "flavor": "small", "image": "ingot://debian-12",
        "ssh_keys": [KEY, KEY], "user_data": "#cloud-config\n",
    }))
    .expect("valid");
    assert_eq!(ok.name.as_deref(), Some("web-1"));
    assert_eq!(ok.image, "debian-12");
    assert_eq!(ok.ssh_keys, vec![KEY.to_owned()], "duplicates dropped");
    assert_eq!(ok.user_data, Some(Secret("#cloud-config\n".into())));
    let minimal =
        parse_request(&json!({"flavor": "f", "image": "i", "ssh_keys": [KEY]})).expect("valid");
    assert_eq!((minimal.name, minimal.user_data), (None, None));

    let base = json!({"flavor": "f", "image": "i", "ssh_keys": [KEY]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let rows: [(Value, &str); 13] = [
        (json!([]), "JSON object"),
        (with("extra", json!(1)), "unknown field \"extra\""),
        (
            json!({"image": "i", "ssh_keys": [KEY]}),
            "flavor is required",
        ),
        (
            json!({"flavor": "f", "ssh_keys": [KEY]}),
            "image is required",
        ),
        (json!({"flavor": "f", "image": "i"}), "ssh_keys is required"),
        (with("ssh_keys", json!([])), "1 to 16 keys"),
        (with("ssh_keys", json!(vec![KEY; 17])), "1 to 16 keys"),
        (with("ssh_keys", json!(["nope"])), "ssh_keys[0]: \"nope\""),
        (with("ssh_keys", json!([1])), "ssh_keys[0] must be a string"),
        (with("image", json!("../etc")), "invalid image name"),
        (with("name", json!("bad name")), "name \"bad name\""),
        (with("name", json!("x".repeat(64))), "longer than 63"),
        (
            with("user_data", json!("x".repeat(MAX_USER_DATA + 1))),
            "user_data is longer",
        ),
    ];
    for (body, want) in rows {
        let err = parse_request(&body).expect_err(want);
        assert!(err.contains(want), "{body}: {err}");
    }
}

fn spec(user_data: Option<&str>) -> ServerSpec {
    ServerSpec {
        flavor: "small".into(),
        image: "debian-12".into(),
        ssh_keys: vec![KEY.into(), "ssh-rsa AAAA other".into()],
        user_data: user_data.map(|u| Secret(u.into())),
        deploy_started: false,
        error: None,
    }
}

#[test]
fn config_drive_carries_keys_and_user_data() {
    let id = Uuid::new_v4();
    let cd = config_drive(id, "web-1", &spec(Some("#cloud-config\n")));
    assert_eq!(
        cd,
        json!({
            "meta_data": {
                "uuid": id, "name": "web-1", "hostname": "web-1",
                "public_keys": {"key-0": KEY, "key-1": "ssh-rsa AAAA other"},
            },
            "user_data": "#cloud-config\n",
        })
    );
    assert!(
        config_drive(id, "n", &spec(None))
            .get("user_data")
            .is_none()
    );
    // The user data never shows in a debug print of the spec.
    let printed = format!("{:?}", spec(Some("SECRET-TOKEN")));
    assert!(!printed.contains("SECRET-TOKEN"), "{printed}");
}

fn allocation(state: &str, server_error: Option<&str>) -> Allocation {
    let mut s = spec(None);
    s.error = server_error.map(Into::into);
    Allocation {
        uuid: Uuid::new_v4(),
        name: Some("web-1".into()),
        resource_class: None,
        traits: vec![],
        candidate_nodes: vec![],
        extra: Default::default(),
        owner: Some("p1".into()),
        state: state.into(),
        node_uuid: None,
        last_error: (state == "error").then(|| "no node".to_owned()),
        created_at: Utc::now(),
        updated_at: None,
        min_properties: Default::default(),
        server: Some(s),
    }
}

#[test]
fn state_table() {
    let node = |state: &str| {
        let mut n = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        n.provision_state = state.into();
        n.last_error = Some(format!("{state} error"));
        n
    };
    use ServerState::*;
    let rows: Vec<(Allocation, Option<Node>, ServerState, Option<&str>)> = vec![
        (allocation("allocating", None), None, Allocating, None),
        (allocation("error", None), None, Error, Some("no node")),
        (
            allocation("active", Some("image gone")),
            Some(node("available")),
            Error,
            Some("image gone"),
        ),
        (
            allocation("active", None),
            Some(node("available")),
            Deploying,
            None,
        ),
        (
            allocation("active", None),
            Some(node("deploying")),
            Deploying,
            None,
        ),
        (
            allocation("active", None),
            Some(node("wait call-back")),
            Deploying,
            None,
        ),
        (
            allocation("active", None),
            Some(node("active")),
            Active,
            None,
        ),
        (
            allocation("active", None),
            Some(node("deploy failed")),
            Error,
            Some("deploy failed error"),
        ),
        (
            allocation("active", None),
            Some(node("deleting")),
            Deleting,
            None,
        ),
        (
            allocation("active", None),
            Some(node("cleaning")),
            Deleting,
            None,
        ),
        (
            allocation("active", None),
            None,
            Error,
            Some("the server's node no longer exists"),
        ),
    ];
    for (a, n, want, err) in rows {
        let (got, got_err) = state_of(&a, n.as_ref());
        assert_eq!(got, want, "{} {:?}", a.state, n.map(|n| n.provision_state));
        assert_eq!(got_err.as_deref(), err);
    }
    let (s, e) = state_of(&allocation("active", None), Some(&node("manageable")));
    assert_eq!(s, Error);
    assert!(e.is_some_and(|e| e.contains("manageable")));
}

#[test]
fn plain_allocations_are_no_servers() {
    let mut a = allocation("active", None);
    assert!(ServerView::of(&a, None, vec![]).is_some());
    a.server = None;
    assert!(ServerView::of(&a, None, vec![]).is_none());
}
