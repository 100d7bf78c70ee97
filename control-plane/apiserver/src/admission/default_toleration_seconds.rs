//! DefaultTolerationSeconds: pods that do not tolerate the node-lifecycle `NoExecute` taints
//! (`not-ready`, `unreachable`) get a 300-second toleration of each, so the node lifecycle
//! controller evicts them five minutes after their node fails rather than at once.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Attributes, Plugin};
use crate::status::ApiResult;

/// The taint of a node whose Ready condition is False.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
pub const DEFAULT_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds plugin.
pub struct DefaultTolerationSeconds;

impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn mutate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if let Some(pod) = object.filter(|_| attributes.is("", "pods")) {
                add_tolerations(pod);
            }
            Ok(())
        })
    }
}

/// Whether `toleration` tolerates the `NoExecute` taint `key` (an empty key or effect matches
/// every one).
fn tolerates(toleration: &Value, key: &str) -> bool {
    let field = |f: &str| toleration.get(f).and_then(Value::as_str).unwrap_or("");
    (field("key") == key || field("key").is_empty())
        && (field("effect") == "NoExecute" || field("effect").is_empty())
}

fn add_tolerations(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if tolerations.is_null() {
        *tolerations = Value::Array(Vec::new());
    }
    let Some(tolerations) = tolerations.as_array_mut() else {
        return;
    };
    for key in [NOT_READY_TAINT, UNREACHABLE_TAINT] {
        if !tolerations.iter().any(|t| tolerates(t, key)) {
            tolerations.push(json!({
                "effect": "NoExecute",
                "key": key,
                "operator": "Exists",
                "tolerationSeconds": DEFAULT_SECONDS,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_not_tolerated() {
        let mut pod =
            json!({"spec": {"tolerations": [{"key": UNREACHABLE_TAINT, "operator": "Exists"}]}});
        add_tolerations(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(pod["spec"]["tolerations"][1]["key"], NOT_READY_TAINT);
        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_tolerations(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"].as_array().map(Vec::len),
            Some(1)
        );
    }
}
