"""Drives the subresources and new kinds with the python `kubernetes` client from PyPI.

Usage: surface_check.py URL (plain HTTP). Prints one JSON object of what it saw; any
failure raises.
"""
import json
import sys

from kubernetes import client
from kubernetes.client.rest import ApiException

configuration = client.Configuration()
configuration.host = sys.argv[1]
api = client.ApiClient(configuration)
core = client.CoreV1Api(api)
apps = client.AppsV1Api(api)
policy = client.PolicyV1Api(api)
events = client.EventsV1Api(api)
seen = {}
ns = "default"

labels = {"app": "py"}
apps.create_namespaced_deployment(ns, client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels=labels),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=labels),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
        ),
    ),
))
apps.patch_namespaced_deployment_scale("py", ns, {"spec": {"replicas": 3}})
scale = apps.read_namespaced_deployment_scale("py", ns)
seen["scale"] = [scale.spec.replicas, scale.status.selector]

try:
    apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="bad"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "other"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
            ),
        ),
    ))
    seen["invalid"] = None
except ApiException as error:
    body = json.loads(error.body)
    seen["invalid"] = [error.status, body["details"]["causes"][0]["field"]]

core.create_namespaced_pod(ns, client.V1Pod(
    metadata=client.V1ObjectMeta(name="p", labels=labels),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
))
# The generated model cannot read the Status a binding answers with, as against any cluster.
core.create_namespaced_pod_binding(
    "p", ns,
    client.V1Binding(metadata=client.V1ObjectMeta(name="p"),
                     target=client.V1ObjectReference(kind="Node", name="n1")),
    _preload_content=False,
)
seen["node"] = core.read_namespaced_pod("p", ns).spec.node_name
# Running and Ready: healthy for the budget (an unready pod may go while it is healthy).
core.patch_namespaced_pod_status(
    "p", ns, {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
)
policy.create_namespaced_pod_disruption_budget(ns, client.V1PodDisruptionBudget(
    metadata=client.V1ObjectMeta(name="b"),
    spec=client.V1PodDisruptionBudgetSpec(min_available=1, selector=client.V1LabelSelector(match_labels=labels)),
))
policy.patch_namespaced_pod_disruption_budget_status("b", ns, {"status": {
    "observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
    "desiredHealthy": 1, "expectedPods": 1}})
try:
    core.create_namespaced_pod_eviction("p", ns, client.V1Eviction(metadata=client.V1ObjectMeta(name="p", namespace=ns)))
    seen["eviction"] = None
except ApiException as error:
    seen["eviction"] = [error.status, json.loads(error.body)["message"]]
try:
    core.read_namespaced_pod_log("p", ns)
    seen["log"] = None
except ApiException as error:
    seen["log"] = [error.status, json.loads(error.body)["message"]]

# Written through events.k8s.io/v1 (the client's model needs eventTime), read through core.
import datetime
events.create_namespaced_event(ns, client.EventsV1Event(
    metadata=client.V1ObjectMeta(name="e"),
    event_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    reporting_controller="example.com/py", reporting_instance="py-1", action="Check",
    regarding=client.V1ObjectReference(kind="Pod", name="p"),
    reason="Seen", note="hello", type="Normal",
))
listed = core.list_namespaced_event(ns)
seen["events"] = [(e.message, e.involved_object.name) for e in listed.items]

svc = core.create_namespaced_service(ns, client.V1Service(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1ServiceSpec(type="NodePort", ports=[client.V1ServicePort(port=80)]),
))
seen["service"] = [bool(svc.spec.cluster_ip), 30000 <= svc.spec.ports[0].node_port <= 32767]
print(json.dumps(seen))
