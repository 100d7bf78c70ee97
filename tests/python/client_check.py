"""Drives the API server with the python `kubernetes` client from PyPI, as a user's script would.

Usage: client_check.py KUBECONFIG. Prints one JSON object of what it saw; any failure raises.
"""
import json
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
seen = {}

namespace = "py-client"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))

# CRUD, with the resourceVersion of each step.
created = core.create_namespaced_config_map(
    namespace,
    client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings", labels={"app": "py"}),
        data={"mode": "fast"},
    ),
)
read = core.read_namespaced_config_map("settings", namespace)
read.data["mode"] = "slow"
replaced = core.replace_namespaced_config_map("settings", namespace, read)
patched = core.patch_namespaced_config_map(
    "settings", namespace, {"metadata": {"annotations": {"by": "python"}}}
)
stale = read
stale.metadata.resource_version = created.metadata.resource_version
try:
    core.replace_namespaced_config_map("settings", namespace, stale)
    seen["conflict"] = None
except ApiException as error:
    seen["conflict"] = [error.status, json.loads(error.body)["reason"]]
try:
    core.read_namespaced_config_map("missing", namespace)
    seen["not_found"] = None
except ApiException as error:
    seen["not_found"] = [error.status, json.loads(error.body)["message"]]
seen["crud"] = [replaced.data["mode"], patched.metadata.annotations.get("by")]

# List paging: five more objects, two per page, every page at the first page's revision. The
# root CA publisher's kube-root-ca.crt is in every namespace: a field selector leaves it out.
for i in range(5):
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"page-{i}"))
    )
names, token, pages = [], None, 0
while True:
    page = core.list_namespaced_config_map(
        namespace,
        limit=2,
        _continue=token,
        field_selector="metadata.name!=kube-root-ca.crt",
    )
    pages += 1
    names += [item.metadata.name for item in page.items]
    token = page.metadata._continue
    if not token:
        break
seen["paging"] = [pages, names]

# Watch from a list's resourceVersion, then resume from the last event's.
listed = core.list_namespaced_config_map(namespace, label_selector="app=py")
start = listed.metadata.resource_version


def change_later():
    core.patch_namespaced_config_map("settings", namespace, {"data": {"step": "1"}})
    core.delete_namespaced_config_map("settings", namespace)


threading.Timer(0.5, change_later).start()
events, last = [], start
stream = watch.Watch()
for event in stream.stream(
    core.list_namespaced_config_map,
    namespace,
    label_selector="app=py",
    resource_version=start,
    timeout_seconds=20,
):
    events.append([event["type"], event["object"].metadata.name])
    last = event["object"].metadata.resource_version
    if event["type"] == "DELETED":
        stream.stop()
seen["watch"] = events
core.create_namespaced_config_map(
    namespace,
    client.V1ConfigMap(metadata=client.V1ObjectMeta(name="later", labels={"app": "py"})),
)
resumed = []
stream = watch.Watch()
for event in stream.stream(
    core.list_namespaced_config_map,
    namespace,
    label_selector="app=py",
    resource_version=last,
    timeout_seconds=20,
):
    resumed.append([event["type"], event["object"].metadata.name])
    stream.stop()
seen["resumed"] = resumed
print(json.dumps(seen))
