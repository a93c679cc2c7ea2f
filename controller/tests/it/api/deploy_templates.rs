//! `/v1/deploy_templates` (1.55): create, list, show by UUID and by name, patch and delete
//! in Ironic's shape, the microversion floor, validation errors, name clashes, paging and
//! sorting, masking of secret step arguments, the body limit and the policy.

use axum::http::{Method, StatusCode};
use controller::store::Store;
use serde_json::{Value, json};

use super::console::{call, console_api, request};
use super::{Api, BASE};

const PATH: &str = "/v1/deploy_templates";

fn steps() -> Value {
    json!([{"interface": "deploy", "step": "erase_devices_metadata", "args": {}, "priority": 150}])
}

fn body(name: &str) -> Value {
    json!({"name": name, "steps": steps()})
}

/// Creates a template and returns its UUID.
async fn create(api: &Api, name: &str) -> String {
    api.post(PATH, body(name))
        .await
        .expect(StatusCode::CREATED)
        .body["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn names(list: &Value) -> Vec<&str> {
    list["deploy_templates"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect()
}

#[tokio::test]
async fn crud_by_uuid_and_by_name() {
    let api = Api::new().await;
    // Before 1.55 the resource does not exist: 404 to read, 405 to write.
    let old = Some("1.54");
    for (method, body, want) in [
        (Method::GET, None, 404),
        (Method::POST, Some(body("CUSTOM_OLD")), 405),
    ] {
        let r = api.send(method, PATH, body, old).await;
        assert_eq!(r.status, want, "{}", String::from_utf8_lossy(&r.raw));
    }
    assert_eq!(
        api.send(Method::GET, "/v1/deploy_templates/CUSTOM_X", None, old)
            .await
            .status,
        404
    );
    assert_eq!(
        api.send(
            Method::PATCH,
            "/v1/deploy_templates/CUSTOM_X",
            Some(json!([])),
            old
        )
        .await
        .status,
        405
    );
    let ok = api
        .send(Method::GET, PATH, None, Some("1.55"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ok.body, json!({"deploy_templates": []}));

    let given = "7d2c6b1e-3f4a-4c5d-8e9f-0a1b2c3d4e5f";
    let r = api
        .post(
            PATH,
            json!({"name": "CUSTOM_RAID1", "steps": steps(), "uuid": given, "extra": {"k": "v"}}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}{PATH}/{given}").as_str())
    );
    assert_eq!(
        keys(&r.body),
        [
            "created_at",
            "extra",
            "links",
            "name",
            "steps",
            "updated_at",
            "uuid"
        ]
    );
    assert_eq!(r.body["uuid"], given);
    assert_eq!(r.body["name"], "CUSTOM_RAID1");
    assert_eq!(r.body["steps"], steps());
    assert_eq!(r.body["extra"], json!({"k": "v"}));
    assert_eq!(r.body["updated_at"], Value::Null);
    assert_eq!(
        r.body["links"],
        json!([{"href": format!("{BASE}{PATH}/{given}"), "rel": "self"},
               {"href": format!("{BASE}/deploy_templates/{given}"), "rel": "bookmark"}])
    );

    // The list shows uuid, name and links; detail and fields show more.
    let list = api.get(PATH).await.expect(StatusCode::OK);
    let rows = list.body["deploy_templates"].as_array().expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(keys(&rows[0]), ["links", "name", "uuid"]);
    let detail = api
        .get(&format!("{PATH}?detail=True"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(detail.body["deploy_templates"][0], r.body);
    let some = api
        .get(&format!("{PATH}?fields=name,steps"))
        .await
        .expect(StatusCode::OK);
    // With fields, `links` comes too (as Ironic).
    let row = &some.body["deploy_templates"][0];
    assert_eq!(keys(row), ["links", "name", "steps"]);
    assert_eq!(row["steps"], steps());

    // Show by UUID and by name, with and without fields.
    for ident in [given, "CUSTOM_RAID1"] {
        let shown = api
            .get(&format!("{PATH}/{ident}"))
            .await
            .expect(StatusCode::OK);
        assert_eq!(shown.body, r.body, "{ident}");
    }
    let some = api
        .get(&format!("{PATH}/CUSTOM_RAID1?fields=uuid,extra"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(keys(&some.body), ["extra", "links", "uuid"]);
    assert_eq!(some.body["extra"], json!({"k": "v"}));
    api.get(&format!("{PATH}/CUSTOM_RAID1?fields=uuid,nope"))
        .await
        .expect(StatusCode::BAD_REQUEST);

    // Patch by name: rename, a step's element, a new step, extra keys.
    let patched = api
        .patch(
            &format!("{PATH}/CUSTOM_RAID1"),
            json!([
                {"op": "replace", "path": "/name", "value": "CUSTOM_RAID10"},
                {"op": "replace", "path": "/steps/0/priority", "value": 120},
                {"op": "add", "path": "/steps/-", "value":
                    {"interface": "raid", "step": "apply_configuration", "args": {"x": 1}, "priority": 0}},
                {"op": "add", "path": "/extra/k2", "value": "v2"},
                {"op": "remove", "path": "/extra/k"},
            ]),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched.body["uuid"], given);
    assert_eq!(patched.body["name"], "CUSTOM_RAID10");
    assert_eq!(patched.body["steps"][0]["priority"], 120);
    assert_eq!(patched.body["steps"][1]["step"], "apply_configuration");
    assert_eq!(patched.body["extra"], json!({"k2": "v2"}));
    assert_ne!(patched.body["updated_at"], Value::Null);
    assert_eq!(patched.body["created_at"], r.body["created_at"]);
    // The whole list at once, by UUID; the old name is gone.
    let replaced = api
        .patch(
            &format!("{PATH}/{given}"),
            json!([{"op": "replace", "path": "/steps", "value": steps()},
                   {"op": "remove", "path": "/extra"}]),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(replaced.body["steps"], steps());
    assert_eq!(replaced.body["extra"], json!({}));
    api.get(&format!("{PATH}/CUSTOM_RAID1")).await.expect_fault(
        StatusCode::NOT_FOUND,
        "Deploy template CUSTOM_RAID1 could not be found.",
    );
    let stored = api
        .store
        .get_deploy_template_by_name("CUSTOM_RAID10")
        .await
        .expect("store")
        .expect("renamed");
    assert_eq!(stored.steps[0].priority, 150);

    // Delete by name, then it is gone by either identifier.
    api.delete(&format!("{PATH}/CUSTOM_RAID10"))
        .await
        .expect(StatusCode::NO_CONTENT);
    for ident in [given, "CUSTOM_RAID10"] {
        api.get(&format!("{PATH}/{ident}")).await.expect_fault(
            StatusCode::NOT_FOUND,
            &format!("Deploy template {ident} could not be found."),
        );
        api.delete(&format!("{PATH}/{ident}"))
            .await
            .expect(StatusCode::NOT_FOUND);
        api.patch(
            &format!("{PATH}/{ident}"),
            json!([{"op": "add", "path": "/extra/a", "value": 1}]),
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    }
    assert_eq!(
        api.get(PATH).await.expect(StatusCode::OK).body,
        json!({"deploy_templates": []})
    );
}

#[tokio::test]
async fn invalid_templates_are_refused_with_the_reason() {
    let api = Api::new().await;
    let bad_names = [
        json!("custom_lower"),
        json!("CUSTOM-DASH"),
        json!("CUSTOM_"),
        json!(""),
    ];
    for name in bad_names {
        let r = api
            .post(PATH, json!({"name": name, "steps": steps()}))
            .await;
        let want = controller::deploy_templates::check_name(name.as_str().expect("str"))
            .expect_err("invalid");
        r.expect_fault(StatusCode::BAD_REQUEST, &want);
    }
    let bad_steps = [
        json!([]),
        json!({}),
        json!([{"interface": "boot", "step": "x", "priority": 1}]),
        json!([{"interface": "deploy", "step": "x"}]),
        json!([{"interface": "deploy", "step": "x", "priority": -1}]),
        json!([{"interface": "deploy", "step": "x", "priority": 1, "args": []}]),
        json!([{"interface": "deploy", "step": "x", "priority": 1, "extra": 1}]),
        json!([{"interface": "deploy", "step": "x", "priority": 1},
               {"interface": "deploy", "step": "x", "priority": 2}]),
    ];
    for s in bad_steps {
        let want = controller::deploy_templates::parse_steps(&s).expect_err("invalid");
        api.post(PATH, json!({"name": "CUSTOM_BAD", "steps": s}))
            .await
            .expect_fault(StatusCode::BAD_REQUEST, &want);
    }
    let schema = [
        (
            json!({"steps": steps()}),
            "Schema error for template: 'name' is a required property",
        ),
        (
            json!({"name": "CUSTOM_A"}),
            "Schema error for template: 'steps' is a required property",
        ),
        (
            json!({"name": 5, "steps": steps()}),
            "Schema error for template: name: a number is not of type 'string'",
        ),
        (
            json!({"name": "CUSTOM_A", "steps": steps(), "description": "x"}),
            "Schema error for template: Additional properties are not allowed ('description' was unexpected)",
        ),
        (
            json!({"name": "CUSTOM_A", "steps": steps(), "extra": []}),
            "Schema error for template: extra: a list is not of type 'object', 'null'",
        ),
        (
            json!({"name": "CUSTOM_A", "steps": steps(), "uuid": "nope"}),
            "Expected UUID for uuid: nope",
        ),
        (
            json!([]),
            "Schema error for template: a list is not of type 'object'",
        ),
    ];
    for (b, fault) in schema {
        api.post(PATH, b)
            .await
            .expect_fault(StatusCode::BAD_REQUEST, fault);
    }
    assert_eq!(
        api.get(PATH).await.expect(StatusCode::OK).body,
        json!({"deploy_templates": []}),
        "nothing was stored"
    );

    // Name and UUID clashes are 409, on create and on rename.
    let uuid = create(&api, "CUSTOM_A").await;
    create(&api, "CUSTOM_B").await;
    api.post(PATH, body("CUSTOM_A")).await.expect_fault(
        StatusCode::CONFLICT,
        "A deploy template with name CUSTOM_A already exists.",
    );
    api.post(
        PATH,
        json!({"name": "CUSTOM_C", "steps": steps(), "uuid": uuid}),
    )
    .await
    .expect_fault(
        StatusCode::CONFLICT,
        &format!("A deploy template with UUID {uuid} already exists."),
    );
    api.patch(
        &format!("{PATH}/CUSTOM_B"),
        json!([{"op": "replace", "path": "/name", "value": "CUSTOM_A"}]),
    )
    .await
    .expect_fault(
        StatusCode::CONFLICT,
        "A deploy template with name CUSTOM_A already exists.",
    );

    // PATCH: only name, steps and extra; the result is checked as a new template would be.
    let target = format!("{PATH}/CUSTOM_A");
    for path in ["/uuid", "/created_at", "/links", "/description"] {
        api.patch(
            &target,
            json!([{"op": "replace", "path": path, "value": "x"}]),
        )
        .await
        .expect_fault(
            StatusCode::BAD_REQUEST,
            &format!("Cannot patch {path}. Only the following can be updated: extra, name, steps"),
        );
    }
    let patches = [
        (
            json!([{"op": "replace", "path": "/name", "value": "lower"}]),
            controller::deploy_templates::check_name("lower").expect_err("invalid"),
        ),
        (
            json!([{"op": "replace", "path": "/steps", "value": []}]),
            controller::deploy_templates::parse_steps(&json!([])).expect_err("invalid"),
        ),
        (
            json!([{"op": "replace", "path": "/steps/0/interface", "value": "boot"}]),
            controller::deploy_templates::parse_steps(
                &json!([{"interface": "boot", "step": "erase_devices_metadata", "args": {}, "priority": 150}]),
            )
            .expect_err("invalid"),
        ),
        (
            json!([{"op": "add", "path": "/steps/-", "value": steps()[0]}]),
            controller::deploy_templates::parse_steps(&json!([steps()[0], steps()[0]]))
                .expect_err("invalid"),
        ),
        (
            json!([{"op": "remove", "path": "/name"}]),
            "Schema error for patch: 'name' is a required property".to_owned(),
        ),
        (
            json!([{"op": "remove", "path": "/steps"}]),
            "Schema error for patch: 'steps' is a required property".to_owned(),
        ),
        (
            json!([{"op": "replace", "path": "/extra", "value": "flat"}]),
            "Schema error for patch: extra: a string is not of type 'object', 'null'"
                .to_owned(),
        ),
    ];
    for (p, fault) in patches {
        api.patch(&target, p)
            .await
            .expect_fault(StatusCode::BAD_REQUEST, &fault);
    }
    api.patch(&target, json!([{"op": "remove", "path": "/extra/missing"}]))
        .await
        .expect(StatusCode::BAD_REQUEST);
    let unchanged = api.get(&target).await.expect(StatusCode::OK);
    assert_eq!(unchanged.body["steps"], steps());
    assert_eq!(unchanged.body["updated_at"], Value::Null);
    // A patch that changes nothing writes nothing: `updated_at` stays empty (as Ironic).
    let same = api
        .patch(
            &target,
            json!([{"op": "remove", "path": "/extra"},
                   {"op": "replace", "path": "/name", "value": "CUSTOM_A"}]),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(same.body, unchanged.body);

    // A body over the API's limit is refused before it is parsed.
    let big = json!({"name": "CUSTOM_BIG", "steps": [{"interface": "deploy", "step": "x",
        "priority": 1, "args": {"blob": "a".repeat(2 * 1024 * 1024)}}]});
    api.post(PATH, big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn paging_sorting_and_markers() {
    let api = Api::new().await;
    let mut uuids = Vec::new();
    for name in ["CUSTOM_B", "CUSTOM_C", "CUSTOM_A"] {
        uuids.push(create(&api, name).await);
    }
    // The default order is creation order.
    let all = api.get(PATH).await.expect(StatusCode::OK);
    assert_eq!(names(&all.body), ["CUSTOM_B", "CUSTOM_C", "CUSTOM_A"]);
    assert_eq!(all.body.get("next"), None);

    let page = api
        .get(&format!("{PATH}?limit=2"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&page.body), ["CUSTOM_B", "CUSTOM_C"]);
    let next = page.body["next"].as_str().expect("next");
    assert_eq!(
        next,
        format!(
            "{BASE}{PATH}?sort_key=id&sort_dir=asc&limit=2&marker={}",
            uuids[1]
        )
    );
    let rest = api
        .get(&next.replace(BASE, ""))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&rest.body), ["CUSTOM_A"]);
    assert_eq!(rest.body.get("next"), None);
    let after_first = api
        .get(&format!("{PATH}?marker={}", uuids[0]))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&after_first.body), ["CUSTOM_C", "CUSTOM_A"]);

    // Sorting by name both ways; the next link keeps the sort, detail and fields.
    let by_name = api
        .get(&format!("{PATH}?sort_key=name"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&by_name.body), ["CUSTOM_A", "CUSTOM_B", "CUSTOM_C"]);
    let desc = api
        .get(&format!(
            "{PATH}?sort_key=name&sort_dir=desc&limit=1&detail=True"
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&desc.body), ["CUSTOM_C"]);
    assert_eq!(desc.body["deploy_templates"][0]["steps"], steps());
    let next = desc.body["next"].as_str().expect("next").replace(BASE, "");
    assert!(
        next.contains("sort_key=name&sort_dir=desc&detail=True&limit=1"),
        "{next}"
    );
    let second = api.get(&next).await.expect(StatusCode::OK);
    assert_eq!(names(&second.body), ["CUSTOM_B"]);
    let newest_first = api
        .get(&format!("{PATH}?sort_dir=desc&fields=name"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        names(&newest_first.body),
        ["CUSTOM_A", "CUSTOM_C", "CUSTOM_B"]
    );
    assert_eq!(
        keys(&newest_first.body["deploy_templates"][0]),
        ["links", "name"]
    );

    // Bad parameters.
    for q in [
        "sort_key=steps",
        "sort_key=extra",
        "sort_dir=up",
        "limit=0",
        "limit=x",
        "detail=maybe",
        "fields=nope",
        "detail=True&fields=name",
    ] {
        api.get(&format!("{PATH}?{q}"))
            .await
            .expect(StatusCode::BAD_REQUEST);
    }
    let unknown = "0b9e3a52-6f1d-4c2e-9a7b-1c2d3e4f5a6b";
    api.get(&format!("{PATH}?marker={unknown}"))
        .await
        .expect_fault(
            StatusCode::NOT_FOUND,
            &format!("Deploy template {unknown} could not be found."),
        );
}

#[tokio::test]
async fn secret_step_arguments_are_masked() {
    let api = Api::new().await;
    let r = api
        .post(
            PATH,
            json!({"name": "CUSTOM_FW", "steps": [{"interface": "management", "step": "update_firmware",
                   "args": {"url": "http://x/fw.bin", "bmc_password": "hunter2"}, "priority": 10}]}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.body["steps"][0]["args"]["bmc_password"], "******");
    assert_eq!(r.body["steps"][0]["args"]["url"], "http://x/fw.bin");
    let listed = api
        .get(&format!("{PATH}?detail=True"))
        .await
        .expect(StatusCode::OK);
    assert!(
        !listed.raw.windows(7).any(|w| w == b"hunter2"),
        "the secret leaked"
    );
    // The stored value is the real one, and a patch elsewhere keeps it.
    api.patch(
        &format!("{PATH}/CUSTOM_FW"),
        json!([{"op": "add", "path": "/extra/a", "value": 1}]),
    )
    .await
    .expect(StatusCode::OK);
    let stored = api
        .store
        .get_deploy_template_by_name("CUSTOM_FW")
        .await
        .expect("store")
        .expect("template");
    assert_eq!(stored.steps[0].args["bmc_password"], "hunter2");
}

#[tokio::test]
async fn only_administrators_of_every_project_change_templates() {
    let (app, _store, _dir) = console_api(4).await;
    let post = |user, name: &str| request(Method::POST, PATH, Some(user), Some(body(name)));
    // A reader (stopped by the role rule), a member of every project and a project member
    // (stopped here) may not create.
    for user in ["ro", "member", "p1"] {
        let (s, b) = call(&app, post(user, "CUSTOM_NO")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}: {b}");
    }
    let (s, created) = call(&app, post("admin", "CUSTOM_YES")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let one = format!("{PATH}/CUSTOM_YES");
    // Users of every project read; a project user does not, not even the list.
    for user in ["admin", "ro", "member"] {
        assert_eq!(
            call(&app, request(Method::GET, &one, Some(user), None))
                .await
                .0,
            StatusCode::OK,
            "{user}"
        );
    }
    for path in [PATH, one.as_str()] {
        assert_eq!(
            call(&app, request(Method::GET, path, Some("p1"), None))
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }
    let rename = json!([{"op": "replace", "path": "/name", "value": "CUSTOM_MINE"}]);
    for user in ["member", "p1"] {
        let patch = request(Method::PATCH, &one, Some(user), Some(rename.clone()));
        assert_eq!(call(&app, patch).await.0, StatusCode::FORBIDDEN, "{user}");
        let del = request(Method::DELETE, &one, Some(user), None);
        assert_eq!(call(&app, del).await.0, StatusCode::FORBIDDEN, "{user}");
    }
    let del = request(Method::DELETE, &one, Some("admin"), None);
    assert_eq!(call(&app, del).await.0, StatusCode::NO_CONTENT);
    // Without credentials: 401.
    let anon = request(Method::GET, PATH, None, None);
    assert_eq!(call(&app, anon).await.0, StatusCode::UNAUTHORIZED);
}
