//! The spec's error result: a numeric code, a message and optional details.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Error codes the CNI spec reserves (1-99) plus the reference plugins' generic 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The config's cniVersion is not one this plugin supports.
    IncompatibleVersion = 1,
    /// A config field is recognised but its value is not supported.
    UnsupportedField = 2,
    /// The container (or its namespace) does not exist.
    UnknownContainer = 3,
    /// The network config is invalid: a field is missing or has a bad value.
    InvalidConfig = 4,
    /// Reading or writing local state failed.
    IoFailure = 5,
    /// Content (stdin or a delegate's output) could not be decoded.
    DecodeFailure = 6,
    /// A CNI_* environment variable is missing or invalid.
    InvalidEnvironment = 7,
    /// Transient: the caller should retry (e.g. no free address right now).
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADDs at the moment.
    NotAvailable = 50,
    /// STATUS: the plugin serves ADDs but with limited connectivity.
    LimitedConnectivity = 51,
    /// Anything else: a kernel or delegate failure.
    Internal = 999,
}

/// A CNI error, printed on stdout as the spec's error JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// Spec error code (see [`ErrorCode`]); delegates may report codes we do not know.
    pub code: u32,
    /// A short message naming what is wrong.
    pub msg: String,
    /// Longer details, e.g. the underlying OS error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and a message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details (e.g. the OS or netlink error) to the error.
    pub fn with_details(mut self, details: impl fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    /// Code 4: the network config is invalid.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }

    /// Code 7: the CNI_* environment is invalid.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }

    /// Code 999: a kernel or other internal failure.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, msg)
    }

    /// Code 5: local state could not be read or written.
    pub fn io(msg: impl Into<String>, err: std::io::Error) -> Self {
        Self::new(ErrorCode::IoFailure, msg).with_details(err)
    }

    /// The spec's error JSON for a result in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut value = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            value["details"] = self.details.clone().into();
        }
        value
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Shorthand for results of CNI operations.
pub type CniResultOf<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields() {
        let err = CniError::config("field `name` is missing").with_details("stdin line 1");
        let json = err.to_json("1.1.0");
        assert_eq!(json["cniVersion"], "1.1.0");
        assert_eq!(json["code"], 4);
        assert_eq!(json["msg"], "field `name` is missing");
        assert_eq!(json["details"], "stdin line 1");
    }

    #[test]
    fn details_are_omitted_when_empty() {
        let json = CniError::env("CNI_COMMAND is not set").to_json("1.0.0");
        assert_eq!(json["code"], 7);
        assert!(json.get("details").is_none());
    }
}
