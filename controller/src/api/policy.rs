//! Who may do what, beyond Ironic's standalone mode: an authenticated user may have a role
//! (`admin`, `member`, `reader`) and a project (`[auth.users.NAME]` in the config file).
//!
//! - A user with no entry (and every caller under `noauth`) is an admin, as Ironic's
//!   http_basic.
//! - A reader only reads: any other method is 403.
//! - A member cannot create or delete nodes or change `driver_info` (the BMC credentials).
//! - A user with a project sees and acts only on nodes whose `owner` or `lessee` is that
//!   project (Ironic's owner/lessee rules); other nodes are 404, as if they did not exist,
//!   and so are their ports.
//!
//! Pure: the middleware and handlers ask; nothing here does IO.

use std::collections::BTreeMap;

use axum::http::Method;
use serde::{Deserialize, Serialize};

use crate::model::{Allocation, Node};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Admin,
    Member,
    Reader,
}

/// One `[auth.users.NAME]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPolicy {
    #[serde(default)]
    pub role: Role,
    /// The project whose nodes (as owner or lessee) the user sees; none: every node.
    pub project: Option<String>,
}

/// The users with a policy, by name.
pub type Policies = BTreeMap<String, UserPolicy>;

/// What a caller may do: its role and project.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    pub role: Role,
    pub project: Option<String>,
}

impl Grant {
    /// The grant of `user` (`None` under `noauth`): its entry, else admin of everything.
    pub fn of(user: Option<&str>, policies: &Policies) -> Grant {
        user.and_then(|u| policies.get(u))
            .map(|p| Grant {
                role: p.role,
                project: p.project.clone(),
            })
            .unwrap_or_default()
    }

    /// Whether the caller sees `node` at all.
    pub fn sees(&self, node: &Node) -> bool {
        match &self.project {
            None => true,
            Some(p) => node.owner.as_deref() == Some(p) || node.lessee.as_deref() == Some(p),
        }
    }

    /// The request-level rule: readers only read; members neither create nor delete nodes.
    /// `path` is the request path without a trailing slash.
    pub fn allows(&self, method: &Method, path: &str) -> Result<(), String> {
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        match self.role {
            Role::Admin => Ok(()),
            Role::Reader if read => Ok(()),
            Role::Reader => Err(format!(
                "Access was denied to {method} {path}: the reader role only reads."
            )),
            Role::Member => {
                let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
                let node_create = *method == Method::POST && segments == ["v1", "nodes"];
                let node_delete = *method == Method::DELETE
                    && segments.len() == 3
                    && segments[..2] == ["v1", "nodes"];
                if node_create || node_delete {
                    Err(format!(
                        "Access was denied to {method} {path}: the member role cannot create or delete nodes."
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether the caller sees `allocation`: a project user only its project's (Ironic's
    /// owner rule for allocations).
    pub fn sees_allocation(&self, allocation: &Allocation) -> bool {
        match &self.project {
            None => true,
            Some(p) => allocation.owner.as_deref() == Some(p),
        }
    }

    /// The owner of an allocation the caller creates, or the owner filter of its list: a
    /// project user allocates and lists only for its own project (the owner defaults to it),
    /// so the conductor picks only nodes that project owns or leases.
    pub fn allocation_owner(&self, requested: Option<String>) -> Result<Option<String>, String> {
        match (&self.project, requested) {
            (None, requested) => Ok(requested),
            (Some(p), None) => Ok(Some(p.clone())),
            (Some(p), Some(r)) if *p == r => Ok(Some(r)),
            (Some(_), Some(_)) => Err(
                "Access was denied to owner: a project user allocates and lists only for its own project."
                    .into(),
            ),
        }
    }

    /// Whether the caller may change these top-level node fields (a member may not touch
    /// `driver_info`).
    pub fn may_patch(&self, field: &str) -> Result<(), String> {
        if self.role == Role::Member && field == "driver_info" {
            return Err("Access was denied to /driver_info: the member role cannot change a node's BMC settings.".into());
        }
        if self.project.is_some() && field == "owner" {
            return Err(
                "Access was denied to /owner: a project user cannot give a node away.".into(),
            );
        }
        Ok(())
    }
}

/// The version floor and the policy of a resource for users of every project (Ironic's
/// system-scoped rules: inspection rules, deploy templates): below `min_version` reads are
/// 404 and writes 405 (as Ironic); a project-scoped user is refused; only an administrator
/// writes. `plural` names the resource in messages ("deploy templates").
pub(super) fn check_system_resource(
    ctx: &super::context::ReqCtx,
    method: &axum::http::Method,
    min_version: u32,
    path: &str,
    plural: &str,
) -> Result<(), super::error::ApiError> {
    use super::error::ApiError;
    let read = *method == axum::http::Method::GET;
    if !ctx.version.at_least(min_version) {
        return Err(if read {
            ApiError::resource_not_found()
        } else {
            ApiError::MethodNotAllowed(format!("The API version does not allow {plural}"))
        });
    }
    if ctx.grant.project.is_some() {
        return Err(ApiError::Forbidden(format!(
            "Access was denied to {path}: {plural} are for users of every project."
        )));
    }
    if !read && ctx.grant.role != Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "Access was denied to {path}: only administrators change {plural}."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn grant(role: Role, project: Option<&str>) -> Grant {
        Grant {
            role,
            project: project.map(Into::into),
        }
    }

    #[test]
    fn roles_by_method_and_path() {
        let admin = grant(Role::Admin, None);
        let member = grant(Role::Member, None);
        let reader = grant(Role::Reader, None);
        let cases: [(&Grant, Method, &str, bool); 12] = [
            (&admin, Method::POST, "/v1/nodes", true),
            (&admin, Method::DELETE, "/v1/nodes/n1", true),
            (&reader, Method::GET, "/v1/nodes/n1", true),
            (&reader, Method::PATCH, "/v1/nodes/n1", false),
            (&reader, Method::PUT, "/v1/nodes/n1/states/power", false),
            (&reader, Method::POST, "/v1/allocations", false),
            (&member, Method::POST, "/v1/nodes", false),
            (&member, Method::DELETE, "/v1/nodes/n1", false),
            (&member, Method::PATCH, "/v1/nodes/n1", true),
            (&member, Method::PUT, "/v1/nodes/n1/states/provision", true),
            (
                &member,
                Method::DELETE,
                "/v1/nodes/n1/traits/CUSTOM_X",
                true,
            ),
            (&member, Method::POST, "/v1/ports", true),
        ];
        for (g, method, path, want) in cases {
            assert_eq!(
                g.allows(&method, path).is_ok(),
                want,
                "{g:?} {method} {path}"
            );
        }
        assert!(member.may_patch("driver_info").is_err());
        assert!(member.may_patch("extra").is_ok());
        assert!(admin.may_patch("driver_info").is_ok());
        assert!(grant(Role::Admin, Some("p1")).may_patch("owner").is_err());
        assert!(admin.may_patch("owner").is_ok());
    }

    #[test]
    fn projects_see_owned_and_leased_nodes() {
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        let p1 = grant(Role::Member, Some("p1"));
        assert!(!p1.sees(&node));
        assert!(grant(Role::Admin, None).sees(&node));
        node.owner = Some("p1".into());
        assert!(p1.sees(&node));
        node.owner = Some("p2".into());
        node.lessee = Some("p1".into());
        assert!(p1.sees(&node));
        assert!(!grant(Role::Reader, Some("p3")).sees(&node));
    }

    #[test]
    fn project_users_allocate_and_see_only_for_their_project() {
        let p1 = grant(Role::Member, Some("p1"));
        let admin = grant(Role::Admin, None);
        type Row<'a> = (&'a Grant, Option<&'a str>, Result<Option<&'a str>, ()>);
        let rows: [Row<'_>; 6] = [
            (&admin, None, Ok(None)),
            (&admin, Some("p2"), Ok(Some("p2"))),
            (&p1, None, Ok(Some("p1"))),
            (&p1, Some("p1"), Ok(Some("p1"))),
            (&p1, Some("p2"), Err(())),
            (&grant(Role::Reader, Some("p3")), None, Ok(Some("p3"))),
        ];
        for (g, requested, want) in rows {
            let got = g.allocation_owner(requested.map(Into::into));
            assert_eq!(
                got.map_err(|_| ()),
                want.map(|o| o.map(str::to_owned)),
                "{g:?} {requested:?}"
            );
        }
        let mut a = Allocation {
            uuid: Uuid::new_v4(),
            name: None,
            resource_class: Some("rc".into()),
            traits: vec![],
            candidate_nodes: vec![],
            extra: Default::default(),
            owner: None,
            state: "allocating".into(),
            node_uuid: None,
            last_error: None,
            created_at: Utc::now(),
            updated_at: None,
            min_properties: Default::default(),
            server: None,
        };
        assert!(admin.sees_allocation(&a));
        assert!(!p1.sees_allocation(&a));
        a.owner = Some("p1".into());
        assert!(p1.sees_allocation(&a));
        a.owner = Some("p2".into());
        assert!(!p1.sees_allocation(&a));
    }

    #[test]
    fn users_without_an_entry_are_admins() {
        let mut policies = Policies::new();
        policies.insert(
            "ro".into(),
            UserPolicy {
                role: Role::Reader,
                project: Some("p1".into()),
            },
        );
        assert_eq!(
            Grant::of(Some("ro",), &policies),
            grant(Role::Reader, Some("p1"))
        );
        assert_eq!(Grant::of(Some("other"), &policies), Grant::default());
        assert_eq!(Grant::of(None, &policies), Grant::default());
    }
}
