"""config/auth/: the Deployment variant with --enable-auth and the least privilege it needs."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from test_manifests import CONFIG, K8S_VERSION, NAMESPACE, RENDERED, render

from graph_router import cli

AUTH = render(CONFIG / "auth")


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("doc", [d for d in AUTH if d["kind"] != "CustomResourceDefinition"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_auth_variant_passes_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_auth_deployment_differs_from_the_base_only_in_the_router_auth() -> None:
    base = copy.deepcopy(_one(RENDERED, "Deployment"))
    auth = copy.deepcopy(_one(AUTH, "Deployment"))
    assert auth["metadata"]["namespace"] == NAMESPACE
    router = auth["spec"]["template"]["spec"]["containers"][0]
    args = router["args"]
    assert args[-3:] == ["--enable-auth", "--inferencegraph-name", "rag-pipeline"]
    parsed = cli.build_parser().parse_args(args)
    assert parsed.enable_auth and parsed.inferencegraph_name == "rag-pipeline"
    assert router["env"][0]["name"] == "POD_NAMESPACE"
    assert router["volumeMounts"][-1] == {"name": "kube-api-access", "readOnly": True,
                                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    # Undo exactly those changes: the rest is the base Deployment, field for field.
    del args[-3:]
    del router["env"]
    router["volumeMounts"].pop()
    assert auth == base


def test_auth_reviewer_may_only_create_the_two_reviews() -> None:
    role = next(d for d in AUTH if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "graph-router-auth-reviewer")
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    binding = next(d for d in AUTH if d["kind"] == "ClusterRoleBinding"
                   and d["metadata"]["name"] == "graph-router-auth-reviewer")
    assert binding["roleRef"]["name"] == "graph-router-auth-reviewer"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "graph-router", "namespace": NAMESPACE}]
    # Everything else is the base config/ as it is.
    extra = {(d["kind"], d["metadata"]["name"]) for d in AUTH} - {(d["kind"], d["metadata"]["name"]) for d in RENDERED}
    name = "graph-router-auth-reviewer"
    assert extra == {("ClusterRole", name), ("ClusterRoleBinding", name)}
