"""The python kubernetes client against admission: LimitRange defaults read back, a quota's
status, the quota refusal and the PodSecurity refusal as ApiExceptions. Prints what it saw as
JSON; the Rust test asserts on it. Usage: admission_check.py <server URL>."""

import json
import sys

from kubernetes import client

config = client.Configuration()
config.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(config))
seen = {}

api.create_namespace({"metadata": {"name": "py"}})
api.create_namespaced_limit_range(
    "py",
    {
        "metadata": {"name": "lr"},
        "spec": {"limits": [{"type": "Container", "default": {"memory": "64Mi"}, "defaultRequest": {"cpu": "50m"}}]},
    },
)
pod = lambda name, extra: {
    "metadata": {"name": name},
    "spec": {"containers": [dict({"name": "c", "image": "busybox"}, **extra)]},
}
made = api.create_namespaced_pod("py", pod("defaulted", {}))
res = made.spec.containers[0].resources
seen["defaults"] = [res.requests, res.limits]

api.create_namespaced_resource_quota("py", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}})
try:
    api.create_namespaced_pod("py", pod("second", {}))
except client.ApiException as e:
    body = json.loads(e.body)
    seen["quota"] = [e.status, body["reason"], body["message"]]
quota = api.read_namespaced_resource_quota("q", "py")
seen["used"] = quota.status.used

api.create_namespace(
    {"metadata": {"name": "py-strict", "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
)
try:
    api.create_namespaced_pod("py-strict", pod("host", {"ports": [{"containerPort": 80, "hostPort": 80}]}))
except client.ApiException as e:
    body = json.loads(e.body)
    seen["podsecurity"] = [e.status, body["reason"], body["message"]]

print(json.dumps(seen))
