//! The `deploy_templates` table.

use controller::deploy_templates::{DeployTemplate, parse_steps};
use controller::store::{Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::store::Db;
use crate::store::fixtures::t0;

fn template(n: u128, name: &str) -> DeployTemplate {
    DeployTemplate {
        uuid: Uuid::from_u128(n),
        name: name.to_owned(),
        steps: parse_steps(&json!([
            {"interface": "deploy", "step": "erase_devices_metadata", "priority": 150,
             "args": {"n": n.to_string()}},
        ]))
        .unwrap(),
        extra: json!({"k": "v"}).as_object().cloned().unwrap(),
        created_at: t0(),
        updated_at: None,
    }
}

/// Create, read by UUID and by name, list in creation order, rename (a taken name is a
/// duplicate), delete.
pub async fn deploy_template_rows(db: &mut Db) {
    let store = &db.store;
    for (n, name) in [(3, "CUSTOM_C"), (1, "CUSTOM_A"), (2, "CUSTOM_B")] {
        store
            .create_deploy_template(&template(n, name))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.create_deploy_template(&template(9, "CUSTOM_A")).await,
        Err(StoreError::Duplicate { field: "name", .. })
    ));
    assert!(matches!(
        store.create_deploy_template(&template(1, "CUSTOM_Z")).await,
        Err(StoreError::Duplicate { field: "uuid", .. })
    ));
    let all = store.list_deploy_templates().await.unwrap();
    let order: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        order,
        ["CUSTOM_C", "CUSTOM_A", "CUSTOM_B"],
        "creation order"
    );
    assert_eq!(all[1], template(1, "CUSTOM_A"), "every field round-trips");
    assert_eq!(
        store.get_deploy_template_by_name("CUSTOM_B").await.unwrap(),
        Some(template(2, "CUSTOM_B"))
    );
    assert_eq!(
        store.get_deploy_template_by_name("custom_b").await.unwrap(),
        None
    );

    let mut renamed = template(2, "CUSTOM_A");
    assert!(matches!(
        store.update_deploy_template(&renamed).await,
        Err(StoreError::Duplicate { field: "name", .. })
    ));
    renamed.name = "CUSTOM_D".to_owned();
    renamed.updated_at = Some(t0());
    store.update_deploy_template(&renamed).await.unwrap();
    assert_eq!(
        store.get_deploy_template(renamed.uuid).await.unwrap(),
        Some(renamed.clone())
    );
    store.delete_deploy_template(renamed.uuid).await.unwrap();
    assert_eq!(store.get_deploy_template(renamed.uuid).await.unwrap(), None);
    assert!(matches!(
        store.delete_deploy_template(renamed.uuid).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_deploy_template(&renamed).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list_deploy_templates().await.unwrap().len(), 2);
}
