use super::MemoryStore;

#[tokio::test]
async fn the_memory_store_passes_the_conformance_checks() {
    crate::conformance::check_all(|| async { MemoryStore::new() }).await;
}
