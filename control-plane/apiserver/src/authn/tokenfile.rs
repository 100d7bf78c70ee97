//! Static bearer tokens from `--token-auth-file`, kube-apiserver's CSV format:
//! `token,user,uid,"group1,group2"` (the groups column optional). Unlike kube-apiserver, which
//! logs and skips or overrides, every doubtful line (a comment, too few or too many columns, an
//! empty token or user, a token already given) refuses the whole file, naming the line, so a
//! typo never silently locks a user out or lets the wrong one in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{AUTHENTICATED_GROUP, UserInfo};

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("read token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The users of a token file, by token.
#[derive(Clone, Default)]
pub struct TokenFile {
    // Keyed by SHA-256 of the token, so a map probe's timing says nothing about a token's
    // leading bytes.
    users: HashMap<[u8; 32], UserInfo>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("users", &self.users.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Splits one CSV line as Go's encoding/csv does with TrimLeadingSpace: commas separate
/// fields, a field starting with `"` runs to the closing quote, `""` inside it is one quote.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".to_string()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

impl TokenFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file = Self::parse(&text, path)?;
        tracing::info!(path = %path.display(), users = file.users.len(), "loaded the token file");
        Ok(file)
    }

    /// Parses token file text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokenFileError> {
        let mut users = HashMap::new();
        let mut first_line: HashMap<[u8; 32], usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |reason: String| TokenFileError::Line {
                path: path.to_path_buf(),
                line,
                reason,
            };
            let content = raw.trim_end_matches('\r');
            if content.trim().is_empty() {
                continue;
            }
            if content.trim_start().starts_with('#') {
                return Err(bad(
                    "comments are not allowed (kube-apiserver would read this as a token)"
                        .to_string(),
                ));
            }
            let fields = split_csv(content).map_err(&bad)?;
            if fields.len() < 3 {
                return Err(bad(format!(
                    "needs at least 3 columns (token, user name, user uid), found {}",
                    fields.len()
                )));
            }
            if fields.len() > 4 {
                return Err(bad(format!(
                    "has {} columns; at most 4 (token, user name, user uid, \"groups\"); quote the groups column",
                    fields.len()
                )));
            }
            let token = fields[0].trim_end();
            if token.is_empty() {
                return Err(bad("empty token".to_string()));
            }
            let name = fields[1].trim_end();
            if name.is_empty() {
                return Err(bad("empty user name".to_string()));
            }
            let key = digest(token);
            if let Some(previous) = first_line.insert(key, line) {
                return Err(bad(format!("token already given on line {previous}")));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                groups.push(AUTHENTICATED_GROUP.to_string());
            }
            users.insert(
                key,
                UserInfo {
                    name: name.to_string(),
                    uid: fields[2].trim_end().to_string(),
                    groups,
                    extra: Default::default(),
                },
            );
        }
        Ok(Self { users })
    }

    /// The user whose token this is.
    pub fn lookup(&self, token: &str) -> Option<&UserInfo> {
        self.users.get(&digest(token))
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenFile, TokenFileError> {
        TokenFile::parse(text, Path::new("/etc/tokens.csv"))
    }

    #[test]
    fn reads_kube_format() {
        let file =
            parse("t1,alice,uid-1,\"dev,ops\"\n\n  t2, bob ,uid-2\r\nt3,carol,,\"\"\"odd\"\"\"\n")
                .unwrap();
        let alice = file.lookup("t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "uid-1");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        let bob = file.lookup("t2").unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, vec!["system:authenticated"]);
        assert_eq!(
            file.lookup("t3").unwrap().groups,
            vec!["\"odd\"", "system:authenticated"]
        );
        assert!(file.lookup("t4").is_none());
        assert_eq!(file.len(), 3);
    }

    fn line_error(text: &str) -> (usize, String) {
        match parse(text).unwrap_err() {
            TokenFileError::Line { line, reason, path } => {
                assert_eq!(path, Path::new("/etc/tokens.csv"));
                (line, reason)
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let ok = "t1,alice,uid-1\n";
        let cases = [
            ("# a comment\n", "comments"),
            ("t2,bob\n", "at least 3 columns"),
            (",bob,uid\n", "empty token"),
            ("t2,,uid\n", "empty user name"),
            ("t1,again,uid\n", "already given on line 1"),
            ("t2,bob,uid,dev,ops\n", "at most 4"),
            ("t2,bob,uid,\"dev\n", "unterminated"),
            ("t2,b\"ob,uid\n", "quote inside"),
        ];
        for (bad, expected) in cases {
            let (line, reason) = line_error(&format!("{ok}\n{bad}"));
            assert_eq!(line, 3, "{bad:?}");
            assert!(reason.contains(expected), "{bad:?}: {reason}");
            let message = parse(&format!("{ok}\n{bad}")).unwrap_err().to_string();
            assert!(message.contains("/etc/tokens.csv, line 3"), "{message}");
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = TokenFile::load(Path::new("/nonexistent/tokens.csv")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokens.csv"), "{err}");
    }
}
