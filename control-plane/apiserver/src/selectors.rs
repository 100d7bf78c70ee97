//! Label and field selectors as the `labelSelector` and `fieldSelector` query parameters carry
//! them, parsed once per request and matched against stored objects.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two requirements).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn bad_selector(text: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (in label selector {text:?})"
    ))
}

fn check_key(key: &str, text: &str) -> ApiResult<String> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(bad_selector(text, &format!("invalid label key {key:?}")))
    }
}

fn check_value(value: &str, text: &str) -> ApiResult<String> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_string())
    } else {
        Err(bad_selector(
            text,
            &format!("invalid label value {value:?}"),
        ))
    }
}

fn parse_set(rest: &str, text: &str) -> ApiResult<BTreeSet<String>> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad_selector(text, "expected a parenthesised set of values"))?;
    inner
        .split(',')
        .map(|v| check_value(v.trim(), text))
        .collect()
}

/// Finds ` in ` / ` notin ` as a whole word after the key.
fn split_word<'a>(part: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let trimmed = part.trim();
    let mut tokens = trimmed.splitn(2, char::is_whitespace);
    let key = tokens.next()?;
    let rest = tokens.next()?.trim_start();
    let after = rest.strip_prefix(word)?;
    if after.starts_with(|c: char| c.is_whitespace() || c == '(') {
        Some((key, after))
    } else {
        None
    }
}

impl LabelSelector {
    /// Parses kube's selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`,
    /// `!a`, joined with commas.
    pub fn parse(text: &str) -> ApiResult<LabelSelector> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad_selector(text, "found ',', expected: identifier"));
            }
            let requirement = if let Some((key, rest)) = split_word(part, "notin") {
                Requirement::NotIn(check_key(key, text)?, parse_set(rest, text)?)
            } else if let Some((key, rest)) = split_word(part, "in") {
                Requirement::In(check_key(key, text)?, parse_set(rest, text)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(
                    check_key(key.trim(), text)?,
                    check_value(value.trim(), text)?,
                )
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(
                    check_key(key.trim(), text)?,
                    check_value(value.trim(), text)?,
                )
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(check_key(key.trim(), text)?)
            } else {
                Requirement::Exists(check_key(part, text)?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, set) => label(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => label(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, joined with commas,
/// over the fields a kind supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

/// The fields any kind can be selected by; the per-kind extras are in [`extra_fields`].
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The extra selectable fields of a kind, as upstream's field label conversion funcs allow.
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["spec.unschedulable"],
        "Secret" => &["type"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Namespace" => &["status.phase"],
        "Job" => &["status.successful"],
        _ => &[],
    }
}

fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // kube's field sets hold an absent string field as the empty string.
        _ => match field {
            "spec.hostNetwork" | "spec.unschedulable" => "false".into(),
            _ => String::new(),
        },
    }
}

impl FieldSelector {
    /// Parses `text` for custom objects whose definition makes `selectable` selectable besides
    /// the metadata fields; another field is a 400 as upstream words it for them.
    pub fn parse_custom(text: &str, selectable: &[String]) -> ApiResult<FieldSelector> {
        FieldSelector::parse_with(
            text,
            &|field| COMMON_FIELDS.contains(&field) || selectable.iter().any(|s| s == field),
            &|field| ApiError::bad_request(format!("field label not supported: {field}")),
        )
    }

    /// Parses `text` for objects of `kind`; an unsupported field is a 400 as upstream.
    pub fn parse(text: &str, kind: &str) -> ApiResult<FieldSelector> {
        FieldSelector::parse_with(
            text,
            &|field| COMMON_FIELDS.contains(&field) || extra_fields(kind).contains(&field),
            &|field| {
                ApiError::bad_request(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ))
            },
        )
    }

    fn parse_with(
        text: &str,
        known: &dyn Fn(&str) -> bool,
        unknown: &dyn Fn(&str) -> ApiError,
    ) -> ApiResult<FieldSelector> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for part in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !known(field) {
                return Err(unknown(field));
            }
            requirements.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value it requires `field` to equal, if any (lets a list narrow its prefix).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, equal, _)| f == field && *equal)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|(field, equal, value)| (field_value(object, field) == *value) == *equal)
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Whether an object passes both.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// Whether they select everything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn every_operator_matches_as_kube() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front,back),!missing", true),
            ("app=web,tier=back", false),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text);
            assert_eq!(selector.map(|s| s.matches(&p)), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_selectors_are_bad_requests() {
        for text in ["app in web", "a b=c", "app=web,", "app=(x"] {
            let parsed = LabelSelector::parse(text);
            assert_eq!(parsed.map_err(|e| e.code), Err(400), "{text}");
        }
    }

    #[test]
    fn field_selectors_know_the_kind_fields() {
        let p = pod(json!({}));
        let node = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", "Pod");
        assert_eq!(node.map(|s| s.matches(&p)), Ok(true));
        let other = FieldSelector::parse("spec.nodeName=n2", "Pod");
        assert_eq!(other.map(|s| s.matches(&p)), Ok(false));
        let unknown = FieldSelector::parse("spec.nodeName=n1", "ConfigMap");
        assert_eq!(unknown.map_err(|e| e.code), Err(400));
    }
}
