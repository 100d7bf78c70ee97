//! Kubeconfig files as kubeadm writes them (admin.conf): one cluster with the CA embedded, one
//! user with its client certificate and key embedded, one context joining them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

/// Name of the cluster entry (kubeadm's default `clusterName`).
pub const CLUSTER_NAME: &str = "kubernetes";

/// A kubeconfig (`apiVersion: v1`, `kind: Config`), only the fields this crate writes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    current_context: String,
    preferences: Preferences,
    users: Vec<NamedUser>,
}

#[derive(Debug, Clone, Serialize)]
struct Preferences {}

#[derive(Debug, Clone, Serialize)]
struct NamedCluster {
    cluster: Cluster,
    name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    certificate_authority_data: String,
    server: String,
}

#[derive(Debug, Clone, Serialize)]
struct NamedContext {
    context: Context,
    name: String,
}

#[derive(Debug, Clone, Serialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Debug, Clone, Serialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

impl Kubeconfig {
    /// A kubeconfig for `user` authenticating with a client certificate against the cluster at
    /// `server`; the context is named `<user>@kubernetes`, as kubeadm names it.
    pub fn for_client_certificate(
        server: &str,
        ca_pem: &str,
        user: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Self {
        let context = format!("{user}@{CLUSTER_NAME}");
        Self {
            api_version: "v1",
            kind: "Config",
            clusters: vec![NamedCluster {
                cluster: Cluster {
                    certificate_authority_data: STANDARD.encode(ca_pem),
                    server: server.to_string(),
                },
                name: CLUSTER_NAME.to_string(),
            }],
            contexts: vec![NamedContext {
                context: Context {
                    cluster: CLUSTER_NAME.to_string(),
                    user: user.to_string(),
                },
                name: context.clone(),
            }],
            current_context: context,
            preferences: Preferences {},
            users: vec![NamedUser {
                name: user.to_string(),
                user: User {
                    client_certificate_data: STANDARD.encode(cert_pem),
                    client_key_data: STANDARD.encode(key_pem),
                },
            }],
        }
    }

    /// The admin kubeconfig (user `kubernetes-admin`).
    pub fn admin(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Self {
        Self::for_client_certificate(server, ca_pem, crate::pki::ADMIN_USER, cert_pem, key_pem)
    }

    /// The kubeconfig as YAML.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_kubeconfig_has_kubeadm_names() {
        let yaml = Kubeconfig::admin("https://127.0.0.1:6443", "CA", "CERT", "KEY")
            .to_yaml()
            .unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "kubernetes-admin@kubernetes");
        assert_eq!(doc["clusters"][0]["name"], "kubernetes");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode("CA")
        );
        assert_eq!(doc["users"][0]["name"], "kubernetes-admin");
        assert_eq!(
            doc["users"][0]["user"]["client-key-data"],
            STANDARD.encode("KEY")
        );
        assert_eq!(doc["contexts"][0]["context"]["user"], "kubernetes-admin");
    }
}
