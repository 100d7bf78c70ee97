//! The deployment controller.

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::context::Context;

/// Starts the deployment controller.
pub fn start(_context: Context) -> BoxFuture<'static, ()> {
    futures::future::pending().boxed()
}
