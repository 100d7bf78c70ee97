//! Admission: the plugins every write passes after decoding and before the store, in kube's
//! two phases. Mutating plugins run first and may change the object (defaults a policy adds,
//! such as the service account or the priority of a pod); then the kind's strategy prepares and
//! validates it; then validating plugins may only refuse it (quota, pod security).
//!
//! A plugin is one file in this module with one job; [`chain`] lists them in kube's order.

pub mod default_toleration_seconds;
pub mod forbid;
pub mod limitranger;
pub mod namespace_lifecycle;
pub mod node_restriction;
pub mod podsecurity;
pub mod priority;
pub mod quantities;
pub mod rbac_escalation;
pub mod resourcequota;
pub mod resources;
pub mod service_account;
pub mod warnings;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::kinds::Kind;
use crate::server::{ApiServer, RequestUser};
use crate::status::ApiResult;

/// What a write does, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST of a new object (or a create-like subresource, such as pods/binding).
    Create,
    /// PUT or PATCH of an existing object or its subresource.
    Update,
    /// DELETE of an object.
    Delete,
}

/// Everything a plugin may read about the request besides the object.
pub struct Attributes<'a> {
    /// The server, for reading other objects (namespaces, service accounts, quotas...).
    pub server: &'a ApiServer,
    /// The kind written.
    pub kind: &'a Kind,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<&'a str>,
    /// The object's name (empty on a create with `generateName` before the strategy ran).
    pub name: &'a str,
    /// The subresource written, e.g. `status`.
    pub subresource: Option<&'a str>,
    /// The operation.
    pub operation: Operation,
    /// The user making the request.
    pub user: &'a RequestUser,
    /// The object as stored before an update or delete.
    pub old: Option<&'a Value>,
    /// Whether the request is `dryRun=All`: plugins must not record side effects then.
    pub dry_run: bool,
}

impl Attributes<'_> {
    /// Whether the request writes `group`/`plural` (the main resource, not a subresource).
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.kind.group == group && self.kind.plural == plural && self.subresource.is_none()
    }
}

/// One admission plugin. Both phases default to admitting everything.
pub trait Plugin: Send + Sync {
    /// The plugin's name as kube-apiserver's `--enable-admission-plugins` spells it.
    fn name(&self) -> &'static str;

    /// The mutating phase: may change `object`. `object` is `None` for deletes.
    fn mutate<'a>(
        &'a self,
        _attributes: &'a Attributes<'a>,
        _object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The validating phase: may refuse `object` (after the strategy prepared and validated
    /// it), never change it. `object` is `None` for deletes.
    fn validate<'a>(
        &'a self,
        _attributes: &'a Attributes<'a>,
        _object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The plugins in the order kube-apiserver runs them.
pub fn chain() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(namespace_lifecycle::NamespaceLifecycle),
        // kube checks this in the RBAC kinds' strategies; here it is one more validating step.
        Box::new(rbac_escalation::RbacEscalation),
        Box::new(limitranger::LimitRanger),
        Box::new(service_account::ServiceAccount),
        Box::new(node_restriction::NodeRestriction),
        Box::new(podsecurity::PodSecurity),
        Box::new(priority::Priority),
        Box::new(default_toleration_seconds::DefaultTolerationSeconds),
        // ResourceQuota is last: it charges what the plugins before it let through.
        Box::new(resourcequota::ResourceQuota),
    ]
}

/// Runs the mutating phase of every plugin in `plugins`.
pub async fn mutate(
    plugins: &[Box<dyn Plugin>],
    attributes: &Attributes<'_>,
    mut object: Option<&mut Value>,
) -> ApiResult<()> {
    for plugin in plugins {
        plugin.mutate(attributes, object.as_deref_mut()).await?;
    }
    Ok(())
}

/// Runs the validating phase of every plugin in `plugins`.
pub async fn validate(
    plugins: &[Box<dyn Plugin>],
    attributes: &Attributes<'_>,
    object: Option<&Value>,
) -> ApiResult<()> {
    for plugin in plugins {
        plugin.validate(attributes, object).await?;
    }
    Ok(())
}
