//! The `inspection_rules` table.

use controller::inspection_rules::{InspectionRule, Operation};
use controller::store::{Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::store::Db;
use crate::store::fixtures::t0;

fn rule(n: u128, priority: i64) -> InspectionRule {
    InspectionRule {
        uuid: Uuid::from_u128(n),
        description: Some(format!("rule {n}")),
        priority,
        sensitive: n.is_multiple_of(2),
        phase: "main".to_owned(),
        conditions: vec![Operation {
            op: "!eq".to_owned(),
            args: json!({"values": ["{inventory[cpu][count]}", 1]}),
            loop_items: None,
            multiple: None,
        }],
        actions: vec![Operation {
            op: "add-trait".to_owned(),
            args: json!(["CUSTOM_X"]),
            loop_items: Some(json!([1, 2])),
            multiple: None,
        }],
        created_at: t0(),
        updated_at: None,
    }
}

pub async fn inspection_rule_rows(db: &mut Db) {
    let store = &db.store;
    for (n, p) in [(1, 10), (2, 50), (3, 10)] {
        store.create_inspection_rule(&rule(n, p)).await.unwrap();
    }
    assert!(matches!(
        store.create_inspection_rule(&rule(1, 0)).await,
        Err(StoreError::Duplicate { field: "uuid", .. })
    ));
    let all = store.list_inspection_rules().await.unwrap();
    let order: Vec<u128> = all.iter().map(|r| r.uuid.as_u128()).collect();
    assert_eq!(order, [2, 1, 3], "highest priority first, then by uuid");
    assert_eq!(all[1], rule(1, 10), "every field round-trips");

    let mut changed = rule(3, 99);
    changed.description = None;
    changed.updated_at = Some(t0());
    store.update_inspection_rule(&changed).await.unwrap();
    assert_eq!(
        store.get_inspection_rule(changed.uuid).await.unwrap(),
        Some(changed.clone())
    );
    store.delete_inspection_rule(changed.uuid).await.unwrap();
    assert_eq!(store.get_inspection_rule(changed.uuid).await.unwrap(), None);
    assert!(matches!(
        store.delete_inspection_rule(changed.uuid).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_inspection_rule(&changed).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list_inspection_rules().await.unwrap().len(), 2);
}
