//! Server-side printing, per kind, of the columns kube-apiserver's Table responses carry
//! (upstream's pkg/printers/internalversion), `-o wide` ones at priority 1. A kind listed
//! here has its whole row laid out here; others get table.rs's generic one.

mod cells;
mod core;
mod others;
mod workloads;

use serde_json::Value;

use crate::kinds::Kind;

/// One column: name, type, priority (1: only with `-o wide`).
pub type Column = (&'static str, &'static str, u8);

/// The columns of `kind` if it has a printer.
pub fn columns(kind: &Kind) -> Option<&'static [Column]> {
    core::columns(kind)
        .or_else(|| workloads::columns(kind))
        .or_else(|| others::columns(kind))
}

/// The cells of one object, one per column of [`columns`].
pub fn cells(kind: &Kind, object: &Value) -> Vec<Value> {
    core::cells(kind, object)
        .or_else(|| workloads::cells(kind, object))
        .or_else(|| others::cells(kind, object))
        .unwrap_or_default()
}
