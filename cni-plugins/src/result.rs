//! The ADD result: interfaces, addresses, routes and DNS, printed in the config's version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::version;

/// A successful ADD's result (spec 1.x field names; older versions are converted on output).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Version the result is written in.
    pub cni_version: String,
    /// Interfaces the plugin created or configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned, each pointing into `interfaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings for the container.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// An interface in the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, lower-case colon-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (spec 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container interfaces; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces` (absent when IPAM returns the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Address with prefix length, e.g. 10.22.0.5/16.
    pub address: IpNet,
    /// Default gateway for this subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A route in the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; none means the interface's default gateway is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no DNS field is set (the field is then omitted).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Decodes a result of any supported version (e.g. a delegate's stdout or `prevResult`).
    pub fn from_value(value: &Value) -> Result<Self, CniError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            CniError::new(
                ErrorCode::DecodeFailure,
                format!("cannot decode CNI result field `{}`", e.path()),
            )
            .with_details(e.into_inner())
        })
    }

    /// The result as JSON in `cni_version`: versions before 1.0.0 carry `version` on each IP
    /// and have no `mtu` on interfaces.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut out = self.clone();
        out.cni_version = cni_version.to_string();
        let legacy = !version::at_least(cni_version, (1, 0, 0));
        if legacy || !version::at_least(cni_version, (1, 1, 0)) {
            for iface in &mut out.interfaces {
                iface.mtu = None;
            }
        }
        let mut value = serde_json::to_value(&out).unwrap_or(Value::Null);
        let legacy_ips = value
            .get_mut("ips")
            .and_then(Value::as_array_mut)
            .filter(|_| legacy);
        if let Some(ips) = legacy_ips {
            for (ip, conf) in ips.iter_mut().zip(&out.ips) {
                let v = if conf.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                };
                ip["version"] = v.into();
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:16:00:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/x".into(),
            }],
            ips: vec![IpConfig {
                interface: Some(0),
                address: "10.22.0.5/16".parse().unwrap(),
                gateway: Some("10.22.0.1".parse().unwrap()),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn result_round_trips() {
        let json = sample().to_json("1.1.0");
        assert_eq!(json["ips"][0]["address"], "10.22.0.5/16");
        assert_eq!(json["interfaces"][0]["mtu"], 1500);
        assert!(json.get("dns").is_none());
        assert_eq!(CniResult::from_value(&json).unwrap(), sample());
    }

    #[test]
    fn legacy_versions_get_ip_version_field() {
        let json = sample().to_json("0.4.0");
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["ips"][0]["version"], "4");
        assert!(json["interfaces"][0].get("mtu").is_none());
        let json = sample().to_json("1.0.0");
        assert!(json["ips"][0].get("version").is_none());
        assert!(json["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn bad_address_is_named() {
        let err = CniResult::from_value(&serde_json::json!({
            "cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/8"}]
        }))
        .unwrap_err();
        assert!(err.msg.contains("ips[0].address"), "{}", err.msg);
    }
}
