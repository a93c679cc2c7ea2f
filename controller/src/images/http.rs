//! `/images/` on the provisioning listener: `GET|HEAD /images/NAME.raw.zst` streams a stored
//! image with `Range` support (resumed downloads), `GET /images/NAME.sha256` gives its
//! checksum in `sha256sum` format.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::{ImageError, ImageStore};

/// URL path of a stored image's data.
pub fn data_path(name: &str) -> String {
    format!("/images/{name}.raw.zst")
}

/// The image routes.
pub fn router(store: Arc<ImageStore>) -> Router {
    Router::new()
        .route("/images/{file}", get(image_file))
        .with_state(store)
}

async fn image_file(
    State(store): State<Arc<ImageStore>>,
    Path(file): Path<String>,
    req: Request,
) -> Response {
    if let Some(name) = file.strip_suffix(".raw.zst") {
        let path = match store.data_path(name) {
            Ok(p) if p.is_file() => p,
            _ => return not_found(),
        };
        tracing::info!(image = name, range = ?req.headers().get(header::RANGE), "serving image");
        return match ServeFile::new(path).oneshot(req).await {
            Ok(resp) => resp.map(Body::new),
            Err(never) => match never {},
        };
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
