"""Asks the review APIs with the python `kubernetes` client from PyPI, as an admin's script would.

Usage: review_check.py KUBECONFIG TOKEN. Prints one JSON object of the answers; any failure raises.
"""
import json
import sys

from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
authz = client.AuthorizationV1Api()
authn = client.AuthenticationV1Api()


def resource(verb, name, namespace=None):
    return client.V1ResourceAttributes(verb=verb, resource=name, namespace=namespace)


mine = authz.create_self_subject_access_review(
    client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=resource("delete", "nodes"))
    )
)
alice = authz.create_subject_access_review(
    client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="alice",
            groups=["system:authenticated"],
            resource_attributes=resource("list", "pods", "default"),
        )
    )
)
alice_delete = authz.create_namespaced_local_subject_access_review(
    "default",
    client.V1LocalSubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="alice", resource_attributes=resource("delete", "pods", "default")
        )
    ),
)
good = authn.create_token_review(
    client.V1TokenReview(spec=client.V1TokenReviewSpec(token=sys.argv[2]))
)
bad = authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token="wrong")))
print(
    json.dumps(
        {
            "self": mine.status.allowed,
            "alice_list": [alice.status.allowed, alice.status.reason],
            "alice_delete": alice_delete.status.allowed,
            "good": [good.status.authenticated, good.status.user.username, good.status.user.groups],
            "bad": [bad.status.authenticated, bad.status.error],
        }
    )
)
