//! The RBAC escalation check as an admission plugin: creates and updates of Roles,
//! ClusterRoles and their bindings pass [`crate::authz::rbac::escalation`], with the object as
//! written.

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::authz::rbac::escalation;
use crate::authz::rbac::index::GROUP;
use crate::status::ApiResult;

/// Refuses RBAC writes that grant more than their author holds.
pub struct RbacEscalation;

impl Plugin for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let (Some(object), Operation::Create | Operation::Update) =
                (object, attributes.operation)
            else {
                return Ok(());
            };
            if attributes.kind.group != GROUP || attributes.subresource.is_some() {
                return Ok(());
            }
            let authorizer = &attributes.server.authorizer;
            let namespace = attributes.namespace.unwrap_or("");
            let resource = attributes.kind.plural;
            match resource {
                "roles" | "clusterroles" => escalation::check_role(
                    authorizer,
                    attributes.user,
                    resource,
                    namespace,
                    attributes.name,
                    object,
                ),
                "rolebindings" | "clusterrolebindings" => escalation::check_binding(
                    authorizer,
                    attributes.user,
                    resource,
                    namespace,
                    attributes.name,
                    object,
                ),
                _ => Ok(()),
            }
        })
    }
}
