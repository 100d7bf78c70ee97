"""Drives CustomResourceDefinitions with the python `kubernetes` client from PyPI.

Usage: crd_check.py URL. Prints one JSON object of what it saw; any unexpected failure raises.
"""
import json
import sys

from kubernetes import client
from kubernetes.client.rest import ApiException

configuration = client.Configuration()
configuration.host = sys.argv[1]
api = client.ApiClient(configuration)
extensions = client.ApiextensionsV1Api(api)
custom = client.CustomObjectsApi(api)
seen = {}

GROUP, VERSION, PLURAL = "example.com", "v1", "sprockets"
schema = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer"},
                "replicas": {"type": "integer"},
                "mode": {"type": "string", "default": "auto"},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}
crd = extensions.create_custom_resource_definition(
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "kind": "Sprocket"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                }
            ],
        },
    }
)
seen["conditions"] = sorted(c.type for c in crd.status.conditions if c.status == "True")

made = custom.create_namespaced_custom_object(
    GROUP, VERSION, "default", PLURAL,
    {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sprocket",
     "metadata": {"name": "s1"}, "spec": {"size": 1, "extra": 2}},
)
seen["created"] = made["spec"]
try:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sprocket",
         "metadata": {"name": "s2"}, "spec": {"size": "large"}},
    )
    seen["invalid"] = None
except ApiException as error:
    body = json.loads(error.body)
    seen["invalid"] = [error.status, body["message"], body["details"]["causes"][0]["field"]]

scale = custom.patch_namespaced_custom_object_scale(
    GROUP, VERSION, "default", PLURAL, "s1", {"spec": {"replicas": 3}}
)
seen["scale"] = [scale["kind"], scale["spec"]["replicas"]]
status = custom.patch_namespaced_custom_object_status(
    GROUP, VERSION, "default", PLURAL, "s1", {"status": {"ready": True}, "spec": {"size": 9}}
)
seen["status"] = [status["status"]["ready"], status["spec"]["size"], status["spec"]["replicas"]]
listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
seen["listed"] = [item["metadata"]["name"] for item in listed["items"]]

extensions.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
print(json.dumps(seen))
