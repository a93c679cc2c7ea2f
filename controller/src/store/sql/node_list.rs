//! The node list query: the sort keys it accepts, filters, keyset paging after a marker,
//! and the free-text search of the console (split from `nodes.rs`).

use super::nodes::SELECT;
use super::{Arg, QueryBuilder, dir_sql, limit_of};
use crate::store::{NodeQuery, SortDir, StoreError};

/// Sort keys `list_nodes` accepts (`NodeQuery::sort_key`), as API field names.
pub const NODE_SORT_KEYS: &[&str] = &[
    "id",
    "uuid",
    "name",
    "description",
    "driver",
    "provision_state",
    "target_provision_state",
    "power_state",
    "resource_class",
    "maintenance",
    "fault",
    "retired",
    "instance_uuid",
    "instance_name",
    "allocation_uuid",
    "owner",
    "lessee",
    "conductor_group",
    "shard",
    "chassis_uuid",
    "parent_node",
    "created_at",
    "updated_at",
    "provision_updated_at",
    "reservation",
];

/// The column behind a sort key, or `None` when the key cannot be sorted on.
pub fn node_sort_column(key: &str) -> Option<&'static str> {
    // Every sort key is also the name of its column.
    NODE_SORT_KEYS
        .iter()
        .copied()
        .find(|candidate| *candidate == key)
}

/// Builds the list query: filters, keyset condition after the marker, order and limit.
///
/// Order is `column ASC NULLS FIRST, id ASC` (descending: the exact reverse), so the
/// marker's `(column, id)` pair splits the list in two.
pub(super) fn build_list(query: &NodeQuery) -> Result<QueryBuilder, StoreError> {
    let key = query.sort_key.as_deref().unwrap_or("id");
    let column = node_sort_column(key).ok_or_else(|| {
        StoreError::Database(format!("{key:?} is not a sortable node field").into())
    })?;
    let (dir, cmp) = dir_sql(query.sort_dir);
    let mut sql = QueryBuilder::new("SELECT ");
    sql.push(SELECT);
    sql.push(" FROM nodes AS n");
    let mut conds: Vec<String> = Vec::new();
    if let Some(marker) = query.marker {
        let placeholder = sql.arg(Arg::Text(marker.to_string()));
        if column == "id" {
            conds.push(format!(
                "n.id {cmp} (SELECT id FROM nodes WHERE uuid = {placeholder})"
            ));
        } else {
            sql.push(&format!(
                " CROSS JOIN (SELECT {column} AS mc, id AS mid FROM nodes WHERE uuid = {placeholder}) AS m"
            ));
            conds.push(match query.sort_dir {
                SortDir::Asc => format!(
                    "((m.mc IS NULL AND (n.{column} IS NOT NULL OR n.id > m.mid)) \
                     OR n.{column} > m.mc OR (n.{column} = m.mc AND n.id > m.mid))"
                ),
                SortDir::Desc => format!(
                    "((m.mc IS NULL AND n.{column} IS NULL AND n.id < m.mid) \
                     OR (m.mc IS NOT NULL AND n.{column} IS NULL) \
                     OR n.{column} < m.mc OR (n.{column} = m.mc AND n.id < m.mid))"
                ),
            });
        }
    }
    let mut eq = |sql: &mut QueryBuilder, column: &str, arg: Arg| {
        let placeholder = sql.arg(arg);
        conds.push(format!("n.{column} = {placeholder}"));
    };
    let text = |value: &Option<String>| value.clone().map(Arg::Text);
    let filters = [
        ("provision_state", text(&query.provision_state)),
        ("resource_class", text(&query.resource_class)),
        ("maintenance", query.maintenance.map(Arg::Bool)),
        ("driver", text(&query.driver)),
        ("owner", text(&query.owner)),
        ("lessee", text(&query.lessee)),
        ("fault", text(&query.fault)),
        ("retired", query.retired.map(Arg::Bool)),
        ("conductor_group", text(&query.conductor_group)),
        ("shard", text(&query.shard)),
        (
            "chassis_uuid",
            query.chassis_uuid.map(|uuid| Arg::Text(uuid.to_string())),
        ),
        ("parent_node", text(&query.parent_node)),
        ("instance_name", text(&query.instance_name)),
        (
            "system_uuid",
            query
                .system_uuid
                .as_deref()
                .map(|s| Arg::Text(s.to_ascii_lowercase())),
        ),
        (
            "instance_uuid",
            query.instance_uuid.map(|uuid| Arg::Text(uuid.to_string())),
        ),
        // '' is the column's "no BMC": a query for it matches nothing (a stored host is
        // trimmed, never a lone space; PostgreSQL refuses NUL in text).
        (
            "bmc_host",
            query.bmc_host.as_deref().map(|h| {
                Arg::Text(if h.is_empty() {
                    " ".to_owned()
                } else {
                    h.to_owned()
                })
            }),
        ),
    ];
    for (column, value) in filters {
        if let Some(value) = value {
            eq(&mut sql, column, value);
        }
    }
    if let Some(project) = &query.project {
        let a = sql.arg(Arg::Text(project.clone()));
        let b = sql.arg(Arg::Text(project.clone()));
        conds.push(format!("(n.owner = {a} OR n.lessee = {b})"));
    }
    match query.associated {
        Some(true) => conds.push("n.instance_uuid IS NOT NULL".to_owned()),
        Some(false) => conds.push("n.instance_uuid IS NULL".to_owned()),
        None => {}
    }
    if let Some(needle) = &query.description_contains {
        let pattern = format!("%{}%", escape_like(&needle.to_lowercase()));
        let placeholder = sql.arg(Arg::Text(pattern));
        conds.push(format!(
            "LOWER(n.description) LIKE {placeholder} ESCAPE '\\'"
        ));
    }
    if let Some(needle) = &query.search {
        conds.push(search_condition(&mut sql, needle));
    }
    if !conds.is_empty() {
        sql.push(" WHERE ");
        sql.push(&conds.join(" AND "));
    }
    if column == "id" {
        sql.push(&format!(" ORDER BY n.id {dir}"));
    } else {
        let nulls = if query.sort_dir == SortDir::Asc {
            "FIRST"
        } else {
            "LAST"
        };
        sql.push(&format!(
            " ORDER BY n.{column} {dir} NULLS {nulls}, n.id {dir}"
        ));
    }
    let placeholder = sql.arg(Arg::Int(limit_of(query.limit)));
    sql.push(&format!(" LIMIT {placeholder}"));
    Ok(sql)
}

/// The console's search: the name or UUID contains the needle, a port's MAC contains it,
/// or the stored inventory has a serial number (`serial` of a disk,
/// `serial_number` of the system) that starts with it. Inventories are compact JSON
/// (`serde_json::to_string`), so `"serial":"VALUE` is how such a value starts in them.
fn search_condition(sql: &mut QueryBuilder, needle: &str) -> String {
    let lower = needle.trim().to_lowercase();
    let contains = format!("%{}%", escape_like(&lower));
    let name = sql.arg(Arg::Text(contains.clone()));
    let uuid = sql.arg(Arg::Text(contains.clone()));
    let mac = sql.arg(Arg::Text(contains));
    let serial = sql.arg(Arg::Text(format!("%\"serial\":\"{}%", escape_like(&lower))));
    let system_serial = sql.arg(Arg::Text(format!(
        "%\"serial_number\":\"{}%",
        escape_like(&lower)
    )));
    format!(
        "(LOWER(n.name) LIKE {name} ESCAPE '\\' OR n.uuid LIKE {uuid} ESCAPE '\\' \
         OR n.uuid IN (SELECT p.node_uuid FROM ports AS p WHERE p.address LIKE {mac} ESCAPE '\\') \
         OR n.uuid IN (SELECT i.node_uuid FROM node_inventory AS i \
         WHERE LOWER(i.doc) LIKE {serial} ESCAPE '\\' OR LOWER(i.doc) LIKE {system_serial} ESCAPE '\\'))"
    )
}

/// Escapes `LIKE` wildcards (`%`, `_`) and the escape character itself.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::bind_args;
    use sqlx::AssertSqlSafe;
    use uuid::Uuid;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(escape_like("plain"), "plain");
    }

    #[test]
    fn sort_keys_are_whitelisted() {
        assert_eq!(node_sort_column("created_at"), Some("created_at"));
        assert_eq!(node_sort_column("id"), Some("id"));
        assert_eq!(node_sort_column("driver_info"), None);
        assert_eq!(node_sort_column("name; DROP TABLE nodes"), None);
    }

    /// The list shapes a large inventory is browsed with run in index order: SQLite's plan
    /// for them has no temporary B-tree (a sort of every matching row).
    #[tokio::test]
    async fn common_lists_are_read_in_index_order() {
        let store = crate::store::sql::SqlStore::connect("sqlite::memory:")
            .await
            .expect("store");
        let super::super::Backend::Sqlite { read, .. } = &store.backend else {
            panic!("sqlite");
        };
        let state = || Some("available".to_owned());
        let shapes = [
            NodeQuery::default(),
            NodeQuery {
                sort_dir: SortDir::Desc,
                ..Default::default()
            },
            NodeQuery {
                provision_state: state(),
                ..Default::default()
            },
            NodeQuery {
                provision_state: state(),
                sort_key: Some("name".to_owned()),
                sort_dir: SortDir::Desc,
                ..Default::default()
            },
            NodeQuery {
                provision_state: state(),
                sort_key: Some("name".to_owned()),
                ..Default::default()
            },
            NodeQuery {
                sort_key: Some("name".to_owned()),
                ..Default::default()
            },
            NodeQuery {
                sort_key: Some("created_at".to_owned()),
                ..Default::default()
            },
            NodeQuery {
                sort_key: Some("updated_at".to_owned()),
                sort_dir: SortDir::Desc,
                ..Default::default()
            },
        ];
        for query in shapes {
            let built = build_list(&query).expect("valid");
            let explain = format!("EXPLAIN QUERY PLAN {}", built.sql);
            let rows: Vec<(i64, i64, i64, String)> =
                bind_args!(sqlx::query_as(AssertSqlSafe(explain)), &built.args)
                    .fetch_all(read)
                    .await
                    .expect("explain");
            let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
            assert!(
                !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                "{query:?} sorts: {plan:?}\n{}",
                built.sql
            );
        }
    }

    #[test]
    fn list_query_binds_every_filter() {
        let query = NodeQuery {
            provision_state: Some("active".to_owned()),
            maintenance: Some(true),
            description_contains: Some("50%".to_owned()),
            sort_key: Some("name".to_owned()),
            sort_dir: SortDir::Desc,
            marker: Some(Uuid::nil()),
            limit: Some(10),
            ..Default::default()
        };
        let built = build_list(&query).expect("valid query");
        assert_eq!(built.args.len(), 5);
        assert!(
            built
                .sql
                .contains("ORDER BY n.name DESC NULLS LAST, n.id DESC LIMIT $5")
        );
        assert!(matches!(&built.args[3], Arg::Text(pattern) if pattern == "%50\\%%"));
        let bad = NodeQuery {
            sort_key: Some("extra".to_owned()),
            ..Default::default()
        };
        assert!(build_list(&bad).is_err());
    }
}
