//! `/images/` on the provisioning listener: `GET|HEAD /images/NAME.raw.zst` streams a stored
//! image with `Range` support (resumed downloads), `GET /images/NAME.sha256` gives its
//! checksum in `sha256sum` format. Both need a valid, unexpired signature for that image in
//! the query (`signing`), and the node it was signed for must be deploying that image now
//! (`deploying` or `wait call-back`, `image_source` naming it): anything else is refused 403
//! before the file is looked at.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::mapped::{self, MappedFiles};
use super::resolve::stored_name;
use super::signing::UrlSigner;
use super::{ImageError, ImageStore};
use crate::machine::ProvisionState;
use crate::store::Store;

/// URL path of a stored image's data.
pub fn data_path(name: &str) -> String {
    format!("/images/{name}.raw.zst")
}

#[derive(Debug, Clone)]
struct ImagesState {
    store: Arc<ImageStore>,
    signer: Arc<UrlSigner>,
    nodes: Arc<dyn Store>,
    mapped: Arc<MappedFiles>,
}

/// The image routes; every request must carry a URL `signer` signed for a node of `nodes`
/// that is being deployed with that image.
pub fn router(store: Arc<ImageStore>, signer: Arc<UrlSigner>, nodes: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/images/{file}", get(image_file))
        .with_state(ImagesState {
            store,
            signer,
            nodes,
            mapped: Arc::default(),
        })
}

/// Whether `node` is being deployed with the stored image `name` right now.
async fn deploying(nodes: &dyn Store, node: uuid::Uuid, name: &str) -> Result<bool, Response> {
    let record = nodes.get_node_by_uuid(node).await.map_err(|e| {
        tracing::error!(error = %e, %node, "reading node for an image request");
        (StatusCode::SERVICE_UNAVAILABLE, "node record unreadable\n").into_response()
    })?;
    let Some(record) = record else {
        return Ok(false);
    };
    let in_deploy = matches!(
        record.provision_state.parse::<ProvisionState>(),
        Ok(ProvisionState::Deploying | ProvisionState::DeployWait)
    );
    let source = record
        .instance_info
        .get("image_source")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    Ok(in_deploy && matches!(stored_name(source), Ok(Some(n)) if n == name))
}

async fn image_file(
    State(ImagesState {
        store,
        signer,
        nodes,
        mapped,
    }): State<ImagesState>,
    Path(file): Path<String>,
    req: Request,
) -> Response {
    let Some(name) = file
        .strip_suffix(".raw.zst")
        .or_else(|| file.strip_suffix(".sha256"))
    else {
        return not_found();
    };
    let now = chrono::Utc::now().timestamp();
    let node = match signer.verify(req.uri().query(), name, now) {
        Ok(node) => node,
        Err(refusal) => {
            tracing::warn!(image = name, %refusal, "refusing image request");
            return (StatusCode::FORBIDDEN, format!("{refusal}\n")).into_response();
        }
    };
    match deploying(nodes.as_ref(), node, name).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(image = name, %node, "refusing image request: node is not deploying it");
            return (
                StatusCode::FORBIDDEN,
                "image URL is for a node that is not being deployed with this image\n",
            )
                .into_response();
        }
        Err(resp) => return resp,
    }
    if let Some(name) = file.strip_suffix(".raw.zst") {
        let path = match store.data_path(name) {
            Ok(p) if p.is_file() => p,
            _ => return not_found(),
        };
        tracing::info!(image = name, %node, range = ?req.headers().get(header::RANGE), "serving image");
        let bytes = match tokio::task::spawn_blocking({
            let mapped = mapped.clone();
            move || mapped.bytes(&path)
        })
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(image = name, error = %e, "mapping image file");
                return (StatusCode::INTERNAL_SERVER_ERROR, "image file unreadable\n")
                    .into_response();
            }
            Err(e) => {
                tracing::error!(image = name, error = %e, "mapping image file");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        return mapped::respond(req.method(), req.headers(), bytes);
    }
    if let Some(name) = file.strip_suffix(".sha256") {
        return match store.get(name) {
            Ok(r) => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}  {name}.raw.zst\n", r.sha256),
            )
                .into_response(),
            Err(ImageError::NotFound(_) | ImageError::InvalidName { .. }) => not_found(),
            Err(e) => {
                tracing::error!(error = %e, "reading image record");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "image record unreadable\n",
                )
                    .into_response()
            }
        };
    }
    not_found()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such image\n").into_response()
}
