//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): the definitions themselves, validated
//! as upstream validates them, and the custom resources they add to the served kinds at once.
//!
//! Each served version of a definition is one [`Kind`] whose `custom` field carries what the
//! generic REST machinery needs beyond the built-in rows: the structural schema (validation,
//! pruning, defaulting), the printer columns and the scale subresource. The [`Registry`] holds
//! the table the server routes against and rebuilds it from the store whenever a definition
//! changes (through this server or, via a store watch, through any other one on the store).

pub mod cleanup;
pub mod columns;
pub mod definition;
pub mod field;
pub mod format;
pub mod intern;
pub mod naming;
pub mod openapi;
pub mod prune;
pub mod registry;
pub mod scale;
pub mod schema;
pub mod strategy;
pub mod structural;
pub mod validate;

use std::sync::Arc;

use capstan_store::KeyValue;
use serde_json::Value;

use crate::kinds::{Kind, NameRule};
use crate::server::ApiServer;
use crate::status::ApiResult;

pub use registry::Registry;
pub use strategy::{prepare, read, strict, warnings, with_warnings};

/// The API group of the definitions.
pub const GROUP: &str = "apiextensions.k8s.io";

/// The finalizer that makes deleting a definition delete its objects first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// What a definition says of one served version, beyond the [`Kind`] fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomVersion {
    /// The definition's name, `<plural>.<group>`.
    pub definition: String,
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// `openAPIV3Schema` of this version.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<columns::Column>,
    /// The scale subresource's paths, when it has one.
    pub scale: Option<scale::ScalePaths>,
    /// Whether the definition is being deleted: its objects are, and no new ones are made.
    pub terminating: bool,
    /// The warning every request to a deprecated version gets.
    pub deprecation: Option<String>,
    /// `selectableFields`, as field selector names (`spec.color`).
    pub selectable: Vec<String>,
    /// `spec.names.listKind`.
    pub list_kind: String,
    /// The list and map semantics of `schema` for server-side apply, read once when the
    /// version is built so that every request (and every server) merges by the same table.
    pub apply: Arc<crate::apply::schema::CustomSchema>,
}

/// The row of `customresourcedefinitions` itself.
pub fn definition_kind() -> Kind {
    Kind {
        group: GROUP,
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        status_subresource: true,
        generation: true,
        delete_returns_object: true,
        name_rule: NameRule::Subdomain,
        create_only: false,
        custom: None,
    }
}

/// Whether `kind` is `customresourcedefinitions`.
pub fn is_definition(kind: &Kind) -> bool {
    kind.group == GROUP && kind.plural == "customresourcedefinitions"
}

/// The `openAPIV3Schema` a custom kind (one served version of a definition) is validated by,
/// for the OpenAPI documents; `None` for built-in kinds.
pub fn schema_of(kind: &Kind) -> Option<&Value> {
    kind.custom.as_ref()?.schema.as_ref()
}

/// The `openAPIV3Schema` of version `version` of the definition `crd` (as stored), for the
/// OpenAPI documents; `None` when the version is missing or has no schema.
pub fn version_schema(crd: &Value, version: &str) -> Option<Value> {
    definition::versions(crd)
        .into_iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
        .cloned()
}

/// The warnings a request to `kind` gets: the deprecation of its version, if any.
pub fn deprecation(kind: &Kind) -> Vec<String> {
    kind.custom
        .as_ref()
        .and_then(|c| c.deprecation.clone())
        .into_iter()
        .collect()
}

/// The object a write stored, as the client sees it (in its version, defaulted); a definition
/// written is served before the write answers.
pub async fn stored(server: &ApiServer, kind: &Kind, kv: &KeyValue) -> ApiResult<Value> {
    let mut object = crate::rest::decode(kv)?;
    read(kind, &mut object);
    if is_definition(kind) {
        if let Err(error) = server.crds.reload(&server.store).await {
            // The store watch catches up; the write itself succeeded.
            tracing::warn!(%error, "could not reload the definitions after a write");
        }
    }
    Ok(object)
}
