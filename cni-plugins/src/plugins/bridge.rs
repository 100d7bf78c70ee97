//! `bridge` (being built).

use crate::error::CniError;
use crate::result::CniResult;
use crate::skel::{Context, Plugin};

/// The bridge plugin.
pub struct Bridge;

fn todo() -> CniError {
    CniError::internal("not implemented yet")
}

impl Plugin for Bridge {
    async fn add(&self, _ctx: &Context) -> Result<CniResult, CniError> {
        Err(todo())
    }
    async fn del(&self, _ctx: &Context) -> Result<(), CniError> {
        Err(todo())
    }
    async fn check(&self, _ctx: &Context) -> Result<(), CniError> {
        Err(todo())
    }
    async fn status(&self, _ctx: &Context) -> Result<(), CniError> {
        Err(todo())
    }
    async fn gc(&self, _ctx: &Context) -> Result<(), CniError> {
        Err(todo())
    }
}
