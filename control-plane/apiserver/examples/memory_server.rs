//! An API server over an in-memory store on plain HTTP, for trying kubectl against:
//! `cargo run -p capstan-apiserver --example memory_server -- 127.0.0.1:8080`, then
//! `kubectl --server http://127.0.0.1:8080 get ns`.

use std::sync::Arc;

use capstan_apiserver::{AllowAllAsAdmin, ApiServer, Config, serve};
use capstan_store::memory::MemoryStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let server = ApiServer::new(Arc::new(MemoryStore::new()), Config::default()).await?;
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("serving on http://{}", listener.local_addr()?);
    serve(listener, server, Arc::new(AllowAllAsAdmin)).await;
    Ok(())
}
