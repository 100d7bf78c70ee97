//! Network configuration types: a plugin's config on stdin and a conflist file.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::result::Dns;

/// The fields every plugin config has; plugin-specific fields are parsed separately with [`parse`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of this config (and of the result we must print).
    pub cni_version: String,
    /// Network name, unique per host; host-local keys its store on it.
    pub name: String,
    /// Plugin executable name.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The IPAM section, handed to the IPAM plugin it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamSection>,
    /// DNS settings to put in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The previous plugin's result (chained plugins, CHECK, DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// Runtime-provided capability arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    /// GC: the attachments the runtime still uses.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `ipam` section: its `type` picks the delegate, the rest belongs to it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct IpamSection {
    /// IPAM plugin executable name, e.g. `host-local`.
    #[serde(rename = "type")]
    pub plugin_type: String,
}

/// One attachment the runtime still holds (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// The container's id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
}

/// A network configuration list (`.conflist`): plugins run in order for one network.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfList {
    /// Spec version of the list.
    pub cni_version: String,
    /// Versions the list's author says the plugins support (spec 1.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    /// Network name, copied into each plugin's config.
    pub name: String,
    /// Runtime must not call CHECK when true.
    #[serde(default)]
    pub disable_check: bool,
    /// Runtime must not call GC when true (spec 1.1).
    #[serde(default, rename = "disableGC")]
    pub disable_gc: bool,
    /// Each plugin's own config object, without `name` and `cniVersion`.
    pub plugins: Vec<Value>,
}

impl ConfList {
    /// Parses a conflist, naming the field that is wrong.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CniError> {
        let list: Self = from_slice(bytes)?;
        if list.plugins.is_empty() {
            return Err(CniError::config("conflist field `plugins` is empty"));
        }
        for (i, plugin) in list.plugins.iter().enumerate() {
            if plugin.get("type").and_then(Value::as_str).is_none() {
                return Err(CniError::config(format!(
                    "conflist field `plugins[{i}].type` is missing or not a string"
                )));
            }
        }
        Ok(list)
    }

    /// The config the runtime sends plugin `index`: its object plus `name`, `cniVersion`
    /// and, when chaining, the previous plugin's result.
    pub fn plugin_config(&self, index: usize, prev_result: Option<&Value>) -> Option<Value> {
        let mut conf = self.plugins.get(index)?.clone();
        let object = conf.as_object_mut()?;
        object.insert("name".into(), self.name.clone().into());
        object.insert("cniVersion".into(), self.cni_version.clone().into());
        if let Some(prev) = prev_result {
            object.insert("prevResult".into(), prev.clone());
        }
        Some(conf)
    }
}

/// Decodes JSON bytes: syntax errors are code 6, type or field errors code 4, both naming
/// the path of the field that failed.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            ErrorCode::DecodeFailure,
            "network config on stdin is not valid JSON",
        )
        .with_details(e)
    })?;
    parse(&value)
}

/// Decodes a typed view of an already-parsed config, naming the failing field.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, CniError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            CniError::config(format!("invalid network config: {inner}"))
        } else {
            CniError::config(format!("invalid network config field `{path}`: {inner}"))
        }
    })
}

/// Parses CNI_ARGS-style `K=V;K2=V2` into pairs (empty input gives none).
pub fn parse_cni_args(args: &str) -> Result<Vec<(String, String)>, CniError> {
    args.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::env(format!(
                "CNI_ARGS: {pair:?} is not of the form KEY=VALUE"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_name_is_named() {
        let err = from_slice::<NetConf>(br#"{"cniVersion":"1.0.0","type":"bridge"}"#).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("name"), "{}", err.msg);
    }

    #[test]
    fn wrong_type_names_nested_field() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            ipam: Inner,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            ranges: Vec<u32>,
        }
        let err = from_slice::<T>(br#"{"ipam":{"ranges":[1,"x"]}}"#).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("ipam.ranges[1]"), "{}", err.msg);
    }

    #[test]
    fn bad_json_is_decode_failure() {
        let err = from_slice::<NetConf>(b"{not json").unwrap_err();
        assert_eq!(err.code, 6);
    }

    #[test]
    fn conflist_builds_plugin_configs() {
        let list = ConfList::from_slice(
            br#"{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"bridge"},{"type":"loopback"}]}"#,
        )
        .unwrap();
        let prev = serde_json::json!({"cniVersion":"1.1.0"});
        let conf = list.plugin_config(1, Some(&prev)).unwrap();
        assert_eq!(conf["type"], "loopback");
        assert_eq!(conf["name"], "n");
        assert_eq!(conf["prevResult"]["cniVersion"], "1.1.0");
        assert!(list.plugin_config(2, None).is_none());
    }

    #[test]
    fn conflist_plugin_without_type_is_refused() {
        let err = ConfList::from_slice(br#"{"cniVersion":"1.1.0","name":"n","plugins":[{}]}"#)
            .unwrap_err();
        assert!(err.msg.contains("plugins[0].type"), "{}", err.msg);
    }

    #[test]
    fn cni_args_parse() {
        let args = parse_cni_args("IgnoreUnknown=1;IP=10.0.0.5").unwrap();
        assert_eq!(args[1], ("IP".to_string(), "10.0.0.5".to_string()));
        assert!(parse_cni_args("").unwrap().is_empty());
        assert_eq!(parse_cni_args("novalue").unwrap_err().code, 7);
    }
}
