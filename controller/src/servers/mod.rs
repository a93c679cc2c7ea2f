//! Servers: a machine requested the way a dashboard user does (a flavor, an image, SSH
//! keys), `/v1/ingot/servers`.
//!
//! A server is not a record of its own: it is an allocation with a
//! [`ServerSpec`](crate::model::ServerSpec) (flavor, image, keys, user data) and the flavor's
//! minimum properties. The conductor claims a node for it as for any allocation, then sets
//! `instance_info.image_source = ingot://IMAGE` and deploys with a config drive built here
//! ([`config_drive`]); its state is read off the allocation and its node ([`state_of`]).
//! Undeploying the node deletes the allocation, so the server goes with it.
//!
//! Pure: request checks, the config drive and the state; the API and the conductor do IO.

pub mod keys;

use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::model::{Allocation, Node, Secret, ServerSpec};

/// Most SSH keys one server takes.
pub const MAX_KEYS: usize = 16;
/// Largest user data (Nova's limit).
pub const MAX_USER_DATA: usize = 64 * 1024;
/// Longest server name (a host name label).
pub const MAX_NAME: usize = 63;

/// `POST /v1/ingot/servers`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRequest {
    pub name: Option<String>,
    pub flavor: String,
    pub image: String,
    pub ssh_keys: Vec<String>,
    pub user_data: Option<Secret>,
}

/// PURE: the request body `{"name"?, "flavor", "image", "ssh_keys": [...], "user_data"?}`,
/// or why it is refused (400). Flavor and image existence are checked by the caller.
pub fn parse_request(body: &Value) -> Result<ServerRequest, String> {
    let obj = body
        .as_object()
        .ok_or("the request body must be a JSON object")?;
    const KEYS: [&str; 5] = ["name", "flavor", "image", "ssh_keys", "user_data"];
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?} (known: {})", KEYS.join(", ")));
    }
    let text = |key: &str, max: usize| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(format!("{key} is longer than {max} bytes")),
            Some(_) => Err(format!("{key} must be a string")),
        }
    };
    let name = text("name", MAX_NAME)?;
    if let Some(n) = &name
        && !is_host_name(n)
    {
        return Err(format!(
            "name {n:?}: use 1-{MAX_NAME} letters, digits and '-', not starting or ending with '-'"
        ));
    }
    let flavor = text("flavor", 64)?.ok_or("flavor is required")?;
    let image = text("image", 80)?.ok_or("image is required")?;
    let image = image
        .strip_prefix(crate::images::resolve::SCHEME)
        .map(str::to_owned)
        .unwrap_or(image);
    crate::images::validate_name(&image).map_err(|e| e.to_string())?;
    let raw_keys = match obj.get("ssh_keys") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err("ssh_keys is required (a list of OpenSSH public keys)".into());
        }
        Some(_) => return Err("ssh_keys must be a list of strings".into()),
    };
    if raw_keys.is_empty() || raw_keys.len() > MAX_KEYS {
        return Err(format!("ssh_keys must hold 1 to {MAX_KEYS} keys"));
    }
    let mut ssh_keys = Vec::new();
    for (i, k) in raw_keys.iter().enumerate() {
        let k = k
            .as_str()
            .ok_or_else(|| format!("ssh_keys[{i}] must be a string"))?;
        let key = keys::check_public_key(k).map_err(|e| format!("ssh_keys[{i}]: {e}"))?;
        if !ssh_keys.contains(&key) {
            ssh_keys.push(key);
        }
    }
    let user_data = text("user_data", MAX_USER_DATA)?.map(Secret);
    Ok(ServerRequest {
        name,
        flavor,
        image,
        ssh_keys,
        user_data,
    })
}

/// A host name label (RFC 1123), which is also a valid Ironic allocation name.
fn is_host_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && !n.starts_with('-')
        && !n.ends_with('-')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && Uuid::parse_str(n).is_err()
}

/// PURE: the config drive of a server's deploy, in the shape of Ironic's
/// `configdrive` object: `meta_data` with the server's UUID (cloud-init's instance id), its
/// name and host name (the server's name, else the node's) and `public_keys`, and the user
/// data when given. A secret: it goes to the node's `instance_info` and nowhere else.
pub fn config_drive(server: Uuid, hostname: &str, spec: &ServerSpec) -> Value {
    let keys: Map<String, Value> = spec
        .ssh_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("key-{i}"), Value::String(k.clone())))
        .collect();
    let mut drive = json!({
        "meta_data": {
            "uuid": server,
            "name": hostname,
            "hostname": hostname,
            "public_keys": keys,
        },
    });
    if let (Some(Secret(user_data)), Some(obj)) = (&spec.user_data, drive.as_object_mut()) {
        obj.insert("user_data".into(), Value::String(user_data.clone()));
    }
    drive
}

/// Where a server stands, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Looking for a node that meets the flavor.
    Allocating,
    /// A node is claimed and being written.
    Deploying,
    /// The node runs the image: log in.
    Active,
    /// No node met the flavor, or the deploy failed (`last_error` says why).
    Error,
    /// The node is being undeployed; the server disappears when that starts cleaning.
    Deleting,
}

/// PURE: a server's state and error from its allocation and node (if it has one).
pub fn state_of(allocation: &Allocation, node: Option<&Node>) -> (ServerState, Option<String>) {
    match allocation.state.as_str() {
        "allocating" => return (ServerState::Allocating, None),
        "error" => return (ServerState::Error, allocation.last_error.clone()),
        _ => {}
    }
    if let Some(err) = allocation.server.as_ref().and_then(|s| s.error.clone()) {
        return (ServerState::Error, Some(err));
    }
    let Some(node) = node else {
        return (
            ServerState::Error,
            Some("the server's node no longer exists".to_owned()),
        );
    };
    let state = match node.provision_state.as_str() {
        "active" => ServerState::Active,
        // `available`: claimed, the deploy is about to start.
        "available" | "deploying" | "wait call-back" => ServerState::Deploying,
        "deleting" | "cleaning" | "clean wait" => ServerState::Deleting,
        "deploy failed" | "error" => ServerState::Error,
        other => {
            return (
                ServerState::Error,
                Some(format!(
                    "the server's node {} was moved to provision state {other:?}",
                    node.uuid
                )),
            );
        }
    };
    let error = match state {
        ServerState::Error => node.last_error.clone(),
        _ => None,
    };
    (state, error)
}

/// One server as `GET /v1/ingot/servers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerView {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub flavor: String,
    pub image: String,
    pub state: ServerState,
    pub node_uuid: Option<Uuid>,
    pub node_name: Option<String>,
    pub provision_state: Option<String>,
    pub last_error: Option<String>,
    /// IPv4 addresses the controller's DHCP leases (or reservations) give the node's NICs.
    pub addresses: Vec<String>,
    pub owner: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ServerView {
    /// The view of a server allocation (`None` for a plain Ironic allocation).
    pub fn of(
        allocation: &Allocation,
        node: Option<&Node>,
        addresses: Vec<String>,
    ) -> Option<Self> {
        let spec = allocation.server.as_ref()?;
        let (state, last_error) = state_of(allocation, node);
        Some(ServerView {
            uuid: allocation.uuid,
            name: allocation.name.clone(),
            flavor: spec.flavor.clone(),
            image: spec.image.clone(),
            state,
            node_uuid: allocation.node_uuid,
            node_name: node.and_then(|n| n.name.clone()),
            provision_state: node.map(|n| n.provision_state.clone()),
            last_error,
            addresses,
            owner: allocation.owner.clone(),
            created_at: allocation.created_at,
            updated_at: allocation.updated_at,
        })
    }
}

#[cfg(test)]
mod tests;
