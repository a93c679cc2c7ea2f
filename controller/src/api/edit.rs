//! Node lookup by ident and the locked read-modify-write cycle every node-changing endpoint
//! uses: take the node's reservation (409 when a task holds it, as Ironic's `NodeLocked`),
//! apply the change, write it with the revision check, and always release.

use uuid::Uuid;

use super::ApiState;
use super::context::ReqCtx;
use super::error::{ApiError, ApiResult, locked_message};
use super::schema::is_valid_name;
use crate::model::Node;
use crate::store::StoreError;

/// Finds a node by UUID, or by name at API >= 1.5 (below that, names are not resolved).
pub async fn find_node(state: &ApiState, ctx: &ReqCtx, ident: &str) -> ApiResult<Node> {
    let found = if let Ok(uuid) = Uuid::parse_str(ident) {
        state.store.get_node_by_uuid(uuid).await?
    } else if !ctx.version.at_least(5) {
        None
    } else if is_valid_name(ident) {
        state.store.get_node(ident).await?
    } else {
        return Err(ApiError::bad_request(format!(
            "Expected a logical name or UUID but received {ident}."
        )));
    };
    // A node outside the caller's project does not exist for it (Ironic's owner/lessee).
    found
        .filter(|n| ctx.grant.sees(n))
        .ok_or_else(|| ApiError::node_not_found(ident))
}

/// Reserves the node, runs `change` on it (which may refuse with an error), stores it and
/// releases the reservation. Returns the node as written (with `reservation` still showing
/// the holder, as Ironic's PATCH response does).
pub async fn edit_node<F>(state: &ApiState, uuid: Uuid, mut change: F) -> ApiResult<Node>
where
    F: FnMut(&mut Node) -> ApiResult<()>,
{
    let holder = state.conductor_name().to_owned();
    let reserved = match state.store.reserve_node(uuid, &holder).await {
        Ok(node) => node,
        Err(StoreError::Locked { holder: by, .. }) => {
            return Err(ApiError::Conflict(locked_message(uuid, &by)));
        }
        Err(StoreError::NotFound { .. }) => return Err(ApiError::node_not_found(uuid)),
        Err(e) => return Err(e.into()),
    };
    let result = write_with_retries(state, reserved, &mut change).await;
    if let Err(e) = state.store.release_node(uuid, &holder).await {
        tracing::warn!(node = %uuid, error = %e, "releasing node reservation failed");
    }
    result
}

/// An edit's refusal, or the store's failure (kept apart to word a lost race as before).
enum EditError {
    Refused(ApiError),
    Store(StoreError),
}

impl From<StoreError> for EditError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

async fn write_with_retries<F>(state: &ApiState, current: Node, change: &mut F) -> ApiResult<Node>
where
    F: FnMut(&mut Node) -> ApiResult<()>,
{
    let uuid = current.uuid;
    let written = crate::store::update_node_with(state.store.as_ref(), uuid, Some(current), |n| {
        change(n).map_err(EditError::Refused)
    })
    .await;
    match written {
        Ok(node) => Ok(node),
        Err(EditError::Refused(e)) => Err(e),
        Err(EditError::Store(StoreError::Stale { .. })) => Err(ApiError::Conflict(format!(
            "Node {uuid} is being changed concurrently, please retry."
        ))),
        Err(EditError::Store(StoreError::NotFound { .. })) => Err(ApiError::node_not_found(uuid)),
        Err(EditError::Store(e)) => Err(e.into()),
    }
}

/// Runs `f` while holding the node's reservation (for deletes), releasing afterwards.
pub async fn with_reservation<T, Fut>(
    state: &ApiState,
    uuid: Uuid,
    f: impl FnOnce(Node) -> Fut,
) -> ApiResult<T>
where
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let holder = state.conductor_name().to_owned();
    let node = match state.store.reserve_node(uuid, &holder).await {
        Ok(node) => node,
        Err(StoreError::Locked { holder: by, .. }) => {
            return Err(ApiError::Conflict(locked_message(uuid, &by)));
        }
        Err(StoreError::NotFound { .. }) => return Err(ApiError::node_not_found(uuid)),
        Err(e) => return Err(e.into()),
    };
    let result = f(node).await;
    if let Err(e) = state.store.release_node(uuid, &holder).await
        && !matches!(e, StoreError::NotFound { .. })
    {
        tracing::warn!(node = %uuid, error = %e, "releasing node reservation failed");
    }
    result
}
