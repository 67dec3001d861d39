//! The one image server of the tests: `oss` downloads come from it, on 127.0.0.1.
//! - `/img/{name}`: the bytes registered under `name`, or 404;
//! - `/gated/{name}`: the same, once the gate is opened (each arrival is counted first), to
//!   hold a download open while a test looks at what the proxy does meanwhile;
//! - a name registered as a redirect answers 302 to its target.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

pub struct ImageServer {
    pub addr: SocketAddr,
    gate: watch::Sender<bool>,
    /// Requests that reached `/gated/...`.
    pub gated_arrivals: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Shared {
    images: Arc<HashMap<String, Vec<u8>>>,
    redirects: Arc<HashMap<String, String>>,
    gate: watch::Receiver<bool>,
    arrivals: Arc<AtomicUsize>,
}

impl ImageServer {
    /// Serves `images` by name.
    pub async fn start(images: HashMap<String, Vec<u8>>) -> Self {
        Self::with_redirects(images, HashMap::new()).await
    }

    /// Serves `images` by name, and answers each name of `redirects` with a 302 to its URL.
    pub async fn with_redirects(
        images: HashMap<String, Vec<u8>>,
        redirects: HashMap<String, String>,
    ) -> Self {
        let (gate, watcher) = watch::channel(false);
        let arrivals = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            images: Arc::new(images),
            redirects: Arc::new(redirects),
            gate: watcher,
            arrivals: arrivals.clone(),
        };
        let app = axum::Router::new()
            .route("/img/{name}", get(image))
            .route("/gated/{name}", get(gated))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the image server");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            gate,
            gated_arrivals: arrivals,
        }
    }

    /// `http://ADDR/{path}`, e.g. `img/a.png`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Lets the held `/gated/...` downloads (and later ones) through.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

async fn image(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    if let Some(target) = s.redirects.get(&name) {
        return (StatusCode::FOUND, [(header::LOCATION, target.clone())]).into_response();
    }
    match s.images.get(&name) {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn gated(State(mut s): State<Shared>, Path(name): Path<String>) -> Response {
    s.arrivals.fetch_add(1, Ordering::AcqRel);
    let _ = s.gate.wait_for(|open| *open).await;
    image(State(s), Path(name)).await
}
