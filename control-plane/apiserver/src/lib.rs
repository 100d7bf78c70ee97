//! Capstan's API server: the Kubernetes REST API (discovery, CRUD, list, watch, patch) over the
//! control-plane store, with TLS, authentication, authorization and admission. It knows kinds
//! only through a table; the node agent never imports it, nor it the agent.

pub mod authn;
pub mod kubeconfig;
pub mod pki;
pub mod tls;
