//! "csrapproving": approves kubelet client certificate requests
//! (`kubernetes.io/kube-apiserver-client-kubelet`) that pass upstream's checks (subject
//! `O=system:nodes`, `CN=system:node:…`, no SANs, client usages) when a SubjectAccessReview says
//! the requester may create `certificatesigningrequests/selfnodeclient` (a node renewing its
//! own, CN = its user name) or `certificatesigningrequests/nodeclient` (e.g. a bootstrap
//! token's user, kubeadm binds system:bootstrappers to it). Anything else is left for a person.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::request::{self, KUBELET_CLIENT};
use super::{Error, finished};
use crate::context::Context;

/// The approval message (upstream's text).
pub const MESSAGE: &str = "Auto approving kubelet client certificate after SubjectAccessReview.";

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let client = context.client.clone();
    Controller::new(
        Api::<CertificateSigningRequest>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

fn error_policy(
    _csr: Arc<CertificateSigningRequest>,
    error: &Error,
    _client: Arc<kube::Client>,
) -> Action {
    tracing::debug!(%error, "CSR approval retried");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    if finished(&csr) || csr.spec.signer_name != KUBELET_CLIENT {
        return Ok(Action::await_change());
    }
    let parsed = match request::parse(&csr.spec.request.0) {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::info!(csr = %name, %error, "CSR not approved: unparsable request");
            return Ok(Action::await_change());
        }
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if let Err(error) = request::validate_kubelet_client(&parsed, &usages) {
        tracing::info!(csr = %name, %error, "CSR not a kubelet client request; left for manual approval");
        return Ok(Action::await_change());
    }
    let own = csr.spec.username.as_deref() == Some(parsed.common_name.as_str());
    let mut tried = Vec::new();
    for (subresource, applies) in [("selfnodeclient", own), ("nodeclient", true)] {
        if !applies {
            continue;
        }
        tried.push(subresource);
        if allowed(&client, &csr, subresource).await? {
            approve(&client, &csr).await?;
            tracing::info!(csr = %name, subresource, "CSR auto-approved");
            return Ok(Action::await_change());
        }
    }
    tracing::info!(csr = %name, recognized = ?tried, "recognized CSR but subject access review was not approved");
    Ok(Action::await_change())
}

/// Whether the requester may create `certificatesigningrequests/<subresource>`.
async fn allowed(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, Error> {
    let spec = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                version: Some("*".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Adds the Approved condition through the `approval` subresource.
async fn approve(client: &kube::Client, csr: &CertificateSigningRequest) -> Result<(), Error> {
    let mut approved = csr.clone();
    let status = approved.status.get_or_insert_with(Default::default);
    let now = Time(jiff::Timestamp::now());
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(MESSAGE.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    api.patch_approval(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({
            "metadata": {"resourceVersion": csr.metadata.resource_version},
            "status": {"conditions": approved.status.and_then(|s| s.conditions)},
        })),
    )
    .await?;
    Ok(())
}
