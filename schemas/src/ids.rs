//! Identifier newtypes. Each is validated once, where it enters the system, and is then safe to
//! use in a subject, a file path or a URL.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "repository name {0:?} is not of the form OWNER/NAME with letters, digits, '.', '-', '_'"
    )]
    Repo(String),
    #[error("build id {0:?} is not 1 to 64 characters of [a-z0-9-]")]
    Build(String),
    #[error("commit {0:?} is not a 40 or 64 character lowercase hexadecimal object id")]
    Commit(String),
}

/// A build's id: lowercase letters, digits and `-`, at most 64 characters. Subject- and path-safe.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(String);

impl BuildId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Build(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the build a delivery asks for: a hash of its key (`<hook id>:<delivery id>`), so
    /// handling the delivery again names the same build.
    pub fn for_delivery(delivery_key: &str) -> Self {
        Self::hashed(delivery_key)
    }

    /// The id of the build a restart request starts.
    pub fn for_restart(old: &BuildId, request_id: &str) -> Self {
        Self::hashed(&format!("restart:{old}:{request_id}"))
    }

    fn hashed(text: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        Self(hex::encode(&digest[..10]))
    }
}

impl TryFrom<String> for BuildId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<BuildId> for String {
    fn from(id: BuildId) -> String {
        id.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A GitHub repository's full name, `owner/name`.
///
/// GitHub allows letters, digits, `-`, `_` and `.` in both parts; `.` and `..` alone are refused
/// so that the name can never walk a path.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && p != "."
                && p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match s.split_once('/') {
            Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(Self(s.to_owned())),
            _ => Err(IdError::Repo(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The repository as one subject token: every byte outside `[A-Za-z0-9_-]` percent-encoded,
    /// so `octo/hello.world` becomes `octo%2Fhello%2Eworld`. Reversible and free of `.`, `*`, `>`.
    pub fn subject_token(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 8);
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

impl TryFrom<String> for RepoName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<RepoName> for String {
    fn from(r: RepoName) -> String {
        r.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (s.len() == 40 || s.len() == 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Commit(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The all-zero id GitHub sends as `after` when a ref is deleted.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl TryFrom<String> for CommitSha {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<CommitSha> for String {
    fn from(c: CommitSha) -> String {
        c.0
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_that_could_walk_a_path_or_break_a_subject_are_refused() {
        for bad in [
            "", "a", "a/", "/b", "../b", "a/..", "a/b/c", "a b/c", "a/b\n", "a/$(x)", "a/b>",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(RepoName::parse("Codertocat/Hello-World").is_ok());
        assert!(RepoName::parse("octo/hello.world_2").is_ok());
    }

    #[test]
    fn subject_token_has_no_subject_separators_and_is_distinct() {
        let a = RepoName::parse("octo/hello.world").expect("valid");
        let b = RepoName::parse("octo.hello/world").expect("valid");
        assert_eq!(a.subject_token(), "octo%2Fhello%2Eworld");
        assert_ne!(a.subject_token(), b.subject_token());
        assert!(!a.subject_token().contains(['.', '*', '>', ' ']));
    }

    #[test]
    fn commit_and_build_ids_are_checked() {
        assert!(CommitSha::parse(&"a".repeat(40)).is_ok());
        assert!(CommitSha::parse(&"0".repeat(40)).expect("valid").is_zero());
        assert!(CommitSha::parse("abc").is_err());
        assert!(CommitSha::parse(&"A".repeat(40)).is_err());
        assert!(BuildId::parse("0f3a-12").is_ok());
        assert!(BuildId::parse("../x").is_err());
        assert!(BuildId::parse("").is_err());
        let a = BuildId::for_delivery("1:abc");
        assert_eq!(a, BuildId::for_delivery("1:abc"));
        assert_ne!(a, BuildId::for_delivery("2:abc"));
        assert_ne!(
            BuildId::for_restart(&a, "r1"),
            BuildId::for_restart(&a, "r2")
        );
        assert!(BuildId::parse(a.as_str()).is_ok());
    }
}
