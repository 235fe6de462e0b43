//! The web client's files (`api.web_root`, the output of `npm run build` in `web/`), served at `/` next
//! to the API, so one origin serves both and the client needs no CORS.
//!
//! Routes of the API win; every other `GET`/`HEAD` is a file of the directory, and a path that names no
//! file is the single-page app's `index.html` (its router shows the page). `/v1/...`, `/assets/...`
//! and other methods keep their JSON/404 answers: an API typo or a missing script must not come back
//! as an HTML page with status 200.
//!
//! Vite names every file under `assets/` by its content hash, so those are cached for a year; the rest
//! (`index.html`, which points at the current hashes) is revalidated on every load.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::services::{ServeDir, ServeFile};

use crate::error::{ApiError, ErrorCode};

/// Files whose names carry their content hash (Vite's `build.assetsDir`).
const HASHED_ASSETS_PREFIX: &str = "/assets/";
/// The API's own prefix: never answered with the app.
const API_PREFIX: &str = "/v1";
/// A year: the longest lifetime caches honour; a hashed name never changes content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Stored, but revalidated before each use (cheap thanks to `Last-Modified`).
const REVALIDATE: &str = "no-cache";

/// The directory to serve, checked.
#[derive(Debug, Clone)]
pub struct WebRoot {
    directory: PathBuf,
}

/// Why a directory cannot be served as the web client.
#[derive(Debug, thiserror::Error)]
#[error(
    "[api] web_root {directory:?} has no index.html: build the client (`npm run build` in web/)"
)]
pub struct Error {
    directory: PathBuf,
}

impl WebRoot {
    /// A directory holding a built client (at least its `index.html`).
    pub fn new(directory: impl Into<PathBuf>) -> Result<WebRoot, Error> {
        let directory = directory.into();
        if !directory.join("index.html").is_file() {
            return Err(Error { directory });
        }
        Ok(WebRoot { directory })
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// `api` with the client's files served for every path none of its routes takes.
    pub fn attach(&self, api: Router) -> Router {
        let web_root = self.clone();
        // Replaces the API's `route_not_found` fallback; `serve` keeps that answer where it belongs.
        api.fallback(move |request: Request| {
            let web_root = web_root.clone();
            async move { web_root.serve(request).await }
        })
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let is_api_path = path == API_PREFIX || path.starts_with("/v1/");
        if is_api_path || !matches!(*request.method(), Method::GET | Method::HEAD) {
            return ApiError::new(ErrorCode::RouteNotFound, "no such route").into_response();
        }
        let hashed_asset = path.starts_with(HASHED_ASSETS_PREFIX);
        let answer = if hashed_asset {
            ServeDir::new(&self.directory).try_call(request).await
        } else {
            ServeDir::new(&self.directory)
                .fallback(ServeFile::new(self.directory.join("index.html")))
                .try_call(request)
                .await
        };
        let mut response = match answer {
            Ok(response) => response.map(Body::new),
            Err(error) => {
                tracing::warn!(%error, path, "reading a web client file failed");
                return ApiError::internal("cannot read the web client's files").into_response();
            }
        };
        let cache_control = if hashed_asset && response.status() == StatusCode::OK {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_index_html_is_refused() {
        let directory = std::env::temp_dir().join(format!("web-root-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).expect("directory");
        assert!(WebRoot::new(&directory).is_err());
        std::fs::write(directory.join("index.html"), "<!doctype html>").expect("index");
        assert_eq!(
            WebRoot::new(&directory).expect("served").directory(),
            directory
        );
        std::fs::remove_dir_all(&directory).expect("cleanup");
    }
}
