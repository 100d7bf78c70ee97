//! Capstan's API server: the Kubernetes REST API (discovery, CRUD, list, watch, patch) over the
//! control-plane store, with TLS, authentication, authorization and admission. It knows kinds
//! only through a table; the node agent never imports it, nor it the agent.

pub mod admission;
pub mod apply;
pub mod authn;
pub mod authz;
pub mod body;
pub mod cache;
pub mod crd;
pub mod default_serviceaccount;
pub mod delete;
pub mod discovery;
pub mod events;
pub mod in_process;
pub mod kinds;
pub mod kubeconfig;
pub mod kubernetes_service;
pub mod list;
pub mod list_items;
pub mod namespaces;
pub mod node_proxy;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod patch_validation;
pub mod pki;
pub mod printers;
pub mod protobuf;
pub mod qos;
pub mod quantity;
pub mod rest;
pub mod reviews;
pub mod route;
pub mod run;
pub mod secure;
pub mod selectors;
pub mod server;
pub mod status;
pub mod strategies;
pub mod strategy;
pub mod subresources;
pub mod table;
pub mod tls;
pub mod tokens;
pub mod validation;
pub mod warnings;
pub mod watch;
pub mod write;

pub use in_process::InProcess;
pub use server::{
    AllowAllAsAdmin, ApiServer, Authenticate, Config, RequestUser, serve, serve_connection,
};
