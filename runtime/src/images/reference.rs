//! Image references, normalised the way containerd and the kubelet do: `busybox` is
//! `docker.io/library/busybox:latest`.

use std::fmt;

/// Registry host of references that name none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const OFFICIAL_PREFIX: &str = "library/";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port when given (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, when the reference names one (a digest-only reference has none).
    pub tag: Option<String>,
    /// Digest, when the reference pins one.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ParseError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let fail = |reason: &str| ParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        if input.len() > 4096 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("it contains white space or is too long"));
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|reason| fail(&reason))?;
                (name, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                (&name_and_tag[..split], Some(&name_and_tag[split + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|reason| fail(&reason))?;
        }
        let (domain, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let repository = if domain == DEFAULT_DOMAIN && !repository.contains('/') {
            format!("{OFFICIAL_PREFIX}{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|reason| fail(&reason))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// `domain/repository`, the name an image is listed under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn locator(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// `name:tag`, when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `name@digest` for a manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks `sha256:<64 lowercase hex>`; other algorithms are refused by name.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} lacks an algorithm prefix"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?} is not 64 lowercase hex characters"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is empty".into());
    }
    for component in repository.split('/') {
        let edges_ok = component
            .bytes()
            .next()
            .zip(component.bytes().last())
            .is_some_and(|(first, last)| {
                first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()
            });
        let chars_ok = component.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if !edges_ok || !chars_ok {
            return Err(format!(
                "repository component {component:?} must be lowercase letters, digits and \
                 separators (. _ -), starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Reference;

    fn normal(input: &str) -> String {
        Reference::parse(input).unwrap().to_string()
    }

    #[test]
    fn short_names_are_normalised_like_containerd() {
        assert_eq!(normal("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normal("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normal("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            normal("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normal("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
    }

    #[test]
    fn ports_digests_and_localhost_are_kept_apart_from_tags() {
        let r = Reference::parse("127.0.0.1:5000/test/shell").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "test/shell")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/app@{digest}")).unwrap();
        assert_eq!(r.domain, "localhost");
        assert_eq!(r.tag, None);
        assert_eq!(r.locator(), digest);
        let r = Reference::parse(&format!("busybox:1@{digest}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.locator(), digest, "a digest wins over a tag");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let err = |s: &str| Reference::parse(s).unwrap_err().reason;
        assert!(err("").contains("empty"));
        assert!(err("Busybox").contains("lowercase"));
        assert!(err("busybox:-x").contains("tag"));
        assert!(err("busybox@sha256:abc").contains("64"));
        assert!(err("busybox@md5:abc").contains("md5"));
        assert!(err("a b").contains("white space"));
    }
}
