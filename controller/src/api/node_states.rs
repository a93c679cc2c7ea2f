//! Node state endpoints served by the conductor (placeholder until it is merged).

use axum::Router;

use super::ApiState;

pub fn routes(_provision_body_limit: usize) -> Router<ApiState> {
    Router::new()
}
