//! The field manager of a write: the `fieldManager` parameter, checked as upstream, or for
//! writes other than apply the first segment of the User-Agent (`kubectl/v1.33.0 ...` gives
//! `kubectl`); and the other checks of PatchOptions (`force` only for apply).

use crate::rest::Call;
use crate::status::{ApiError, ApiResult, Cause};

/// The longest field manager name upstream takes.
const MAX_MANAGER_LENGTH: usize = 128;

/// Which request options an error names, e.g. `PatchOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Options {
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
}

impl Options {
    fn kind(self) -> &'static str {
        match self {
            Options::Create => "CreateOptions",
            Options::Update => "UpdateOptions",
            Options::Patch => "PatchOptions",
        }
    }
}

fn invalid(options: Options, causes: Vec<Cause>) -> ApiError {
    let kind = options.kind();
    // `PatchOptions.meta.k8s.io "" is invalid: ...`, as upstream.
    ApiError::invalid("meta.k8s.io", kind, "", causes)
}

fn check_manager(manager: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if manager.len() > MAX_MANAGER_LENGTH {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {MAX_MANAGER_LENGTH} bytes"),
            field: "fieldManager".into(),
        });
    }
    for (at, c) in manager.char_indices() {
        if c.is_control() {
            causes.push(Cause::invalid(
                "fieldManager",
                manager,
                &format!("invalid character U+{:04X} (at position {at})", c as u32),
            ));
        }
    }
    causes
}

/// The manager of a create, update or non-apply patch. A patch with `force` is refused.
pub fn manager(call: &Call<'_>, options: Options) -> ApiResult<String> {
    if options == Options::Patch && call.param("force").is_some() {
        return Err(invalid(
            options,
            vec![Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: may not be specified for non-apply patch".into(),
                field: "force".into(),
            }],
        ));
    }
    match call.param("fieldManager").filter(|m| !m.is_empty()) {
        Some(manager) => {
            let causes = check_manager(manager);
            if causes.is_empty() {
                Ok(manager.to_string())
            } else {
                Err(invalid(options, causes))
            }
        }
        None => {
            let agent = call.user_agent.as_deref().unwrap_or("");
            let prefix = agent.split('/').next().unwrap_or("");
            Ok(prefix
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_MANAGER_LENGTH)
                .collect())
        }
    }
}

/// The manager of an apply: required.
pub fn apply_manager(call: &Call<'_>) -> ApiResult<String> {
    let manager = call.param("fieldManager").unwrap_or("");
    let mut causes = Vec::new();
    if manager.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: is required for apply patch".into(),
            field: "fieldManager".into(),
        });
    }
    causes.extend(check_manager(manager));
    if causes.is_empty() {
        Ok(manager.to_string())
    } else {
        Err(invalid(Options::Patch, causes))
    }
}
