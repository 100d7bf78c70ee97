//! Test helpers: an API server over a MemoryStore, in process or on a loopback port.

#![allow(dead_code)]

pub mod plane;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_apiserver::{AllowAllAsAdmin, ApiServer, Config, RequestUser, serve};
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// A server over a fresh MemoryStore, with the store for compaction.
pub async fn server() -> (Arc<ApiServer>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let config = Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let shared: Arc<dyn Store> = store.clone();
    let server = match ApiServer::new(shared, config).await {
        Ok(server) => server,
        Err(error) => panic!("server did not start: {error}"),
    };
    (server, store)
}

/// Serves `server` on 127.0.0.1:0; returns its `http://` URL.
pub async fn listen(server: Arc<ApiServer>) -> String {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("bind: {error}"),
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => panic!("local_addr: {error}"),
    };
    tokio::spawn(serve(listener, server, Arc::new(AllowAllAsAdmin)));
    format!("http://{address}")
}

/// One in-process request; returns the code and the body as JSON (Null when not JSON).
pub async fn call(
    server: &ApiServer,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())));
    let request = match request {
        Ok(request) => request,
        Err(error) => panic!("request: {error}"),
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let code = response.status().as_u16();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A JSON request.
pub async fn json(server: &ApiServer, method: &str, uri: &str, body: &Value) -> (u16, Value) {
    call(server, method, uri, "application/json", &body.to_string()).await
}
