//! Kubernetes name rules (RFC 1123 labels and subdomains), with the API server's messages, for
//! pod, container and volume names and the node name.

/// The longest RFC 1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// The longest RFC 1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;

const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label_body(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// Why `name` is not an RFC 1123 subdomain, in the API server's words; None if it is one.
pub fn dns1123_subdomain_error(name: &str) -> Option<String> {
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Some(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    (!name.split('.').all(is_label_body)).then(|| SUBDOMAIN_MESSAGE.to_string())
}

/// Why `name` is not an RFC 1123 label, in the API server's words; None if it is one.
pub fn dns1123_label_error(name: &str) -> Option<String> {
    if name.len() > DNS1123_LABEL_MAX {
        return Some(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    (!is_label_body(name)).then(|| LABEL_MESSAGE.to_string())
}

/// IANA service names: at most 15 lowercase alphanumerics or '-', with a letter, no '--'.
pub fn port_name_error(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Some("must not begin or end with a hyphen, nor contain adjacent hyphens");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert_eq!(dns1123_subdomain_error("web"), None);
        assert_eq!(dns1123_subdomain_error("web-1.example.com"), None);
        assert_eq!(dns1123_subdomain_error("0"), None);
        for bad in ["", "Foo", "foo_bar", "-a", "a-", "a..b", ".a", "a."] {
            let err = dns1123_subdomain_error(bad).expect(bad);
            assert!(
                err.starts_with("a lowercase RFC 1123 subdomain"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            dns1123_subdomain_error(&"a".repeat(254)).as_deref(),
            Some("must be no more than 253 characters")
        );
    }

    #[test]
    fn labels() {
        assert_eq!(dns1123_label_error("nginx"), None);
        assert_eq!(dns1123_label_error("a-1"), None);
        for bad in ["", "a.b", "A", "a_b", "-a"] {
            let err = dns1123_label_error(bad).expect(bad);
            assert!(
                err.starts_with("a lowercase RFC 1123 label"),
                "{bad}: {err}"
            );
        }
        assert!(dns1123_label_error(&"a".repeat(64)).is_some());
    }
}
