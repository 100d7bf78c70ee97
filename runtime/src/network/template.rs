//! The pod CIDRs UpdateRuntimeConfig hands over, and the network config rendered from them.
//! The template's placeholders are plain text substitutions (containerd uses Go templates
//! with the same names; only these three forms are understood here):
//!
//! - `{{.PodCIDR}}`: the first CIDR, e.g. `10.244.1.0/24`;
//! - `{{.PodCIDRRanges}}`: host-local range sets, one per CIDR:
//!   `[[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:1::/64"}]]`;
//! - `{{.Routes}}`: a default route per address family present:
//!   `[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]`.

use ipnet::IpNet;
use serde_json::{Value, json};

use super::NetworkError;

/// The CRI field the CIDRs come from, named in errors.
pub const POD_CIDR_FIELD: &str = "runtime_config.network_config.pod_cidr";

/// Parses a comma-separated CIDR list; empty input gives none.
pub fn parse_pod_cidrs(text: &str) -> Result<Vec<IpNet>, NetworkError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(str::trim)
        .map(|value| {
            value
                .parse::<IpNet>()
                .map_err(|e| NetworkError::InvalidCidr {
                    field: POD_CIDR_FIELD,
                    value: value.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// `template` with the placeholders replaced for `cidrs` (at least one).
pub fn render(template: &str, cidrs: &[IpNet]) -> String {
    let first = cidrs.first().map(ToString::to_string).unwrap_or_default();
    let ranges: Vec<Value> = cidrs
        .iter()
        .map(|cidr| json!([{ "subnet": cidr.to_string() }]))
        .collect();
    let mut routes = Vec::new();
    if cidrs.iter().any(|c| matches!(c, IpNet::V4(_))) {
        routes.push(json!({ "dst": "0.0.0.0/0" }));
    }
    if cidrs.iter().any(|c| matches!(c, IpNet::V6(_))) {
        routes.push(json!({ "dst": "::/0" }));
    }
    template
        .replace("{{.PodCIDR}}", &first)
        .replace("{{.PodCIDRRanges}}", &Value::from(ranges).to_string())
        .replace("{{.Routes}}", &Value::from(routes).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{"cniVersion":"1.1.0","name":"pods","plugins":[{"type":"bridge",
        "ipam":{"type":"host-local","subnet":"{{.PodCIDR}}","ranges":{{.PodCIDRRanges}},
        "routes":{{.Routes}}}}]}"#;

    #[test]
    fn cidrs_are_parsed_and_bad_ones_named() {
        let cidrs = parse_pod_cidrs(" 10.244.1.0/24 , fd00:1::/64").unwrap();
        assert_eq!(cidrs.len(), 2);
        assert!(parse_pod_cidrs("").unwrap().is_empty());
        for bad in ["10.244.1.0", "10.244.1.0/24,", "10.0.0.0/33", "nonsense/8"] {
            let err = parse_pod_cidrs(bad).unwrap_err().to_string();
            assert!(err.contains(POD_CIDR_FIELD), "{err}");
        }
        let err = parse_pod_cidrs("10.0.0.0/24,bogus")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bogus\""), "{err}");
    }

    #[test]
    fn dual_stack_renders_ranges_and_routes() {
        let cidrs = parse_pod_cidrs("10.244.1.0/24,fd00:1::/64").unwrap();
        let rendered: Value = serde_json::from_str(&render(TEMPLATE, &cidrs)).unwrap();
        let ipam = &rendered["plugins"][0]["ipam"];
        assert_eq!(ipam["subnet"], "10.244.1.0/24");
        assert_eq!(
            ipam["ranges"],
            json!([[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:1::/64"}]])
        );
        assert_eq!(ipam["routes"], json!([{"dst":"0.0.0.0/0"},{"dst":"::/0"}]));
    }

    #[test]
    fn one_family_gets_one_route() {
        let cidrs = parse_pod_cidrs("fd00:1::/64").unwrap();
        let rendered: Value = serde_json::from_str(&render(TEMPLATE, &cidrs)).unwrap();
        assert_eq!(
            rendered["plugins"][0]["ipam"]["routes"],
            json!([{"dst":"::/0"}])
        );
        assert_eq!(rendered["plugins"][0]["ipam"]["subnet"], "fd00:1::/64");
    }
}
