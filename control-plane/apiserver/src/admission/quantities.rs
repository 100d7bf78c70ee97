//! Quantity syntax of the kinds that hold resource quantities. kube-apiserver refuses a
//! malformed quantity when it decodes the body, before admission; here decoding keeps JSON,
//! so LimitRanger, the first plugin to read quantities, calls [`check`] first.

use serde_json::Value;

use crate::kinds::Kind;
use crate::quantity::Quantity;
use crate::status::{ApiError, ApiResult};

/// The resource lists of an object of `kind`, as JSON pointers to maps of quantities.
fn lists(kind: &Kind, object: &Value) -> Vec<Value> {
    let at = |pointer: &str| object.pointer(pointer).cloned();
    let mut found: Vec<Option<Value>> = Vec::new();
    match (kind.group, kind.plural) {
        ("", "pods") => {
            found.push(at("/spec/overhead"));
            for list in ["containers", "initContainers"] {
                let containers = object
                    .pointer(&format!("/spec/{list}"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in containers {
                    found.push(c.pointer("/resources/requests").cloned());
                    found.push(c.pointer("/resources/limits").cloned());
                }
            }
        }
        ("", "resourcequotas") => {
            found.extend(["/spec/hard", "/status/hard", "/status/used"].map(at));
        }
        ("", "persistentvolumeclaims") => {
            found.extend(["/spec/resources/requests", "/spec/resources/limits"].map(at));
        }
        ("", "limitranges") => {
            let items = at("/spec/limits")
                .and_then(|l| l.as_array().cloned())
                .unwrap_or_default();
            for item in items {
                for field in [
                    "max",
                    "min",
                    "default",
                    "defaultRequest",
                    "maxLimitRequestRatio",
                ] {
                    found.push(item.get(field).cloned());
                }
            }
        }
        _ => {}
    }
    found.into_iter().flatten().collect()
}

/// Refuses `object` when one of its quantities is malformed, as kube's decoder does.
pub fn check(kind: &Kind, object: &Value) -> ApiResult<()> {
    for list in lists(kind, object) {
        let Some(map) = list.as_object() else {
            continue;
        };
        for value in map.values() {
            let parsed = match value {
                Value::String(s) => Quantity::parse(s).map(|_| ()),
                Value::Number(n) => Quantity::parse(&n.to_string()).map(|_| ()),
                _ => Err(crate::quantity::QuantityError::Syntax),
            };
            if let Err(error) = parsed {
                return Err(ApiError::bad_request(format!(
                    "{k} in version \"{v}\" cannot be handled as a {k}: {error}",
                    k = kind.kind,
                    v = kind.version
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    #[test]
    fn malformed_quantities_are_refused_as_kube_decoding_does() {
        let table = KindTable::default();
        let Some(pods) = table.find("", "v1", "pods") else {
            panic!("no pods")
        };
        let good =
            json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": 5}}}]}});
        assert!(check(pods, &good).is_ok());
        let bad = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "lots"}}}]}});
        let Err(error) = check(pods, &bad) else {
            panic!("accepted")
        };
        assert_eq!(error.code, 400);
        assert_eq!(
            error.message,
            "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }
}
