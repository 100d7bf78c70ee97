//! Request paths: which endpoint a path names, and for resource paths the kind, namespace, name
//! and subresource, as kube-apiserver lays them out.

use std::collections::HashMap;

use crate::kinds::{Kind, KindTable};

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    Resources(String, String),
    /// A resource, a collection or an object in it.
    Resource(Target<'a>),
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their `/<check>` children).
    Health(String),
    /// `/openapi/v2`, `/openapi/v3` and below.
    OpenApi(String),
    /// The service-account issuer's OIDC discovery: `/.well-known/openid-configuration`,
    /// `/openid/v1/jwks`.
    ServiceAccountIssuer(String),
    /// Nothing here.
    Unknown,
}

/// A resource path: the kind, and what in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The kind.
    pub kind: &'a Kind,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object's name, if the path names one.
    pub name: Option<String>,
    /// The subresource, e.g. `status`.
    pub subresource: Option<String>,
}

/// Percent-decodes one path segment; `None` when it decodes to no valid UTF-8.
fn decode_segment(segment: &str) -> Option<String> {
    let decoded: Vec<u8> = percent_decode(segment.as_bytes());
    String::from_utf8(decoded).ok()
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Parses the path of a request.
pub fn parse<'a>(table: &'a KindTable, path: &str) -> Route<'a> {
    let Some(segments) = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(decode_segment)
        .collect::<Option<Vec<String>>>()
    else {
        return Route::Unknown;
    };
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] | [""] => Route::Unknown,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["api", version] => Route::Resources(String::new(), version.to_string()),
        ["apis", group, version] => Route::Resources(group.to_string(), version.to_string()),
        ["api", version, rest @ ..] => resource(table, "", version, rest),
        ["apis", group, version, rest @ ..] => resource(table, group, version, rest),
        ["version"] => Route::Version,
        [check @ ("healthz" | "livez" | "readyz"), ..] => Route::Health(check.to_string()),
        ["openapi", ..] => Route::OpenApi(path.to_string()),
        [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"] => {
            Route::ServiceAccountIssuer(path.to_string())
        }
        _ => Route::Unknown,
    }
}

fn resource<'a>(table: &'a KindTable, group: &str, version: &str, rest: &[&str]) -> Route<'a> {
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        let kind = table.find(group, version, plural)?;
        if namespace.is_some() && !kind.namespaced {
            return None;
        }
        Some(Target {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    let found = match rest {
        ["namespaces", ns, plural, more @ ..]
            if table
                .find(group, version, plural)
                .is_some_and(|k| k.namespaced) =>
        {
            match more {
                [] => target(plural, Some(ns), None, None),
                [name] => target(plural, Some(ns), Some(name), None),
                [name, sub] => target(plural, Some(ns), Some(name), Some(sub)),
                // A proxy path goes on past the subresource.
                [name, "proxy", ..] => target(plural, Some(ns), Some(name), Some("proxy")),
                _ => None,
            }
        }
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        [plural, name, "proxy", ..] => target(plural, None, Some(name), Some("proxy")),
        _ => None,
    };
    found.map(Route::Resource).unwrap_or(Route::Unknown)
}

/// The query parameters, decoded; a repeated one keeps its last value.
pub fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_what_kube_serves() {
        let table = KindTable::default();
        let Route::Resource(t) = parse(&table, "/api/v1/namespaces/default/pods/web/status") else {
            panic!("not a resource");
        };
        assert_eq!(
            (
                t.kind.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let Route::Resource(ns) = parse(&table, "/api/v1/namespaces/default/status") else {
            panic!("not a resource");
        };
        assert_eq!(
            (
                ns.kind.plural,
                ns.name.as_deref(),
                ns.subresource.as_deref()
            ),
            ("namespaces", Some("default"), Some("status"))
        );
        let Route::Resource(all) = parse(&table, "/apis/apps/v1/deployments") else {
            panic!("not a resource");
        };
        assert_eq!((all.kind.kind, all.namespace), ("Deployment", None));
        assert_eq!(
            parse(&table, "/api/v1/namespaces/x/nodes/n"),
            Route::Unknown
        );
        assert_eq!(parse(&table, "/apis/apps/v1/nothing"), Route::Unknown);
        assert_eq!(percent_decode(b"a%2Fb%"), b"a/b%".to_vec());
    }
}
