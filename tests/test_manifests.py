"""config/ and the Dockerfile: Kubernetes' own schemas, the CRD's schema, and what the pod must be.

Built-in kinds are checked with kubernetes-validate (Kubernetes' published OpenAPI
schemas, shipped inside the package, so it works offline) in strict mode, which also
rejects unknown fields. InferenceGraphs are checked against the CRD's own
openAPIV3Schema and against graph_router's validation.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from graph_router import cli
from graph_router.loader import load_graph_file
from graph_router.plan import compile_graph
from graph_router.spec import (
    Condition,
    InferenceGraphSpec,
    InferenceGraphStatus,
    InferenceRouter,
    InferenceStep,
    RouterTimeouts,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
SAMPLES = CONFIG / "samples"
K8S_VERSION = "1.37"
NAMESPACE = "graph-router"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def render(directory: Path) -> list[dict[str, Any]]:
    """What ``kustomize build`` makes of the features config/ uses: resources and namespace."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "namespace", "resources"}
    assert not unsupported, f"this test's renderer does not know {unsupported}; teach it first"
    out: list[dict[str, Any]] = []
    for entry in spec["resources"]:
        target = directory / entry
        out.extend(render(target) if target.is_dir() else copy.deepcopy(documents(target)))
    namespace = spec.get("namespace")
    if namespace:
        for doc in out:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
            for subject in doc.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
    return out


RENDERED = render(CONFIG)
RENDERED_SAMPLES = render(SAMPLES)


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in RENDERED if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def crd_schema() -> dict[str, Any]:
    version = one("CustomResourceDefinition")["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def pruned(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """The fields an API server with this structural schema would silently drop from ``obj``."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = []
        for key, value in obj.items():
            if props is not None and key in props:
                out += pruned(value, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += pruned(value, extra, f"{where}.{key}")
            elif props is not None:
                out.append(f"{where}.{key}")
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [p for i, item in enumerate(obj) for p in pruned(item, schema["items"], f"{where}[{i}]")]
    return []


def sample_graphs() -> list[tuple[str, dict[str, Any]]]:
    graphs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        graphs += [(path.name, d) for d in documents(path) if d.get("kind") == "InferenceGraph"]
    return graphs


def test_kustomization_renders_every_manifest() -> None:
    """The kustomization lists every manifest file, and the rendered set holds each kind the issue asks for."""
    listed = {str((CONFIG / r).resolve()) for r in yaml.safe_load((CONFIG / "kustomization.yaml").read_text())
              ["resources"]}
    manifests = {str(p.resolve()) for sub in ("crd", "rbac", "deployment") for p in (CONFIG / sub).glob("*.yaml")}
    assert manifests <= listed, f"not in the kustomization: {sorted(manifests - listed)}"
    kinds = sorted({d["kind"] for d in RENDERED})
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding",
                            "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget"])
    for doc in RENDERED + RENDERED_SAMPLES:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_samples_are_their_own_kustomization() -> None:
    """`kubectl apply -k config/` deploys no graph (its services may not exist); config/samples/ deploys
    every sample graph, on purpose, and only graphs (the suites beside them are local test files)."""
    assert not any(d["kind"] == "InferenceGraph" for d in RENDERED)
    graph_files = {p.name for p in SAMPLES.glob("*.yaml")
                   if any(d.get("kind") == "InferenceGraph" for d in documents(p))}
    listed = set(yaml.safe_load((SAMPLES / "kustomization.yaml").read_text())["resources"])
    assert listed == graph_files
    assert {d["kind"] for d in RENDERED_SAMPLES} == {"InferenceGraph"}


@pytest.mark.parametrize("doc", [d for d in RENDERED if d["kind"] != "InferenceGraph"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_passes_kubernetes_schema(doc: dict[str, Any]) -> None:
    """Each built-in object validates strictly (unknown fields rejected) against Kubernetes' schema."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_check_catches_a_misspelt_field() -> None:
    """The validator is not a rubber stamp: a typo in the Deployment fails it."""
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("name", "graph"), sample_graphs(), ids=lambda v: v if isinstance(v, str) else "")
def test_sample_graph_passes_the_crd_schema_and_validation(name: str, graph: dict[str, Any]) -> None:
    """Each sample validates against the CRD's openAPIV3Schema, loses nothing to pruning, and compiles."""
    schema = crd_schema()
    jsonschema.Draft7Validator(schema).validate(graph)
    assert pruned(graph, schema) == []
    compile_graph(load_graph_file(SAMPLES / name), require_urls=False)


def test_crd_schema_rejects_a_bad_graph() -> None:
    """An unknown routerType or a missing nodes map fails the CRD schema; an unknown field would be pruned."""
    validator = jsonschema.Draft7Validator(crd_schema())
    graph = copy.deepcopy(sample_graphs()[0][1])
    graph["spec"]["nodes"]["root"]["routerType"] = "Pipeline"
    assert not validator.is_valid(graph)
    assert not validator.is_valid({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
                                   "metadata": {"name": "x"}, "spec": {}})
    unknown = copy.deepcopy(sample_graphs()[0][1])
    unknown["spec"]["nodes"]["root"]["steps"][0]["retries"] = 3
    assert pruned(unknown, crd_schema()) == [".spec.nodes.root.steps[0].retries"]


def test_crd_schema_knows_every_field_graph_router_reads() -> None:
    """No field of the spec and status models would be pruned by an API server with this CRD."""
    spec = crd_schema()["properties"]["spec"]["properties"]
    status = crd_schema()["properties"]["status"]["properties"]
    node = spec["nodes"]["additionalProperties"]["properties"]
    pairs = [
        (InferenceGraphSpec, spec), (InferenceRouter, node), (InferenceStep, node["steps"]["items"]["properties"]),
        (RouterTimeouts, spec["routerTimeouts"]["properties"]), (InferenceGraphStatus, status),
        (Condition, status["conditions"]["items"]["properties"]),
    ]
    for model, props in pairs:
        aliases = {f.alias or n for n, f in model.model_fields.items()}
        assert aliases <= set(props), f"{model.__name__}: {sorted(aliases - set(props))}"


def test_crd_is_kserve_compatible() -> None:
    """Group, version, names, scope, the status subresource and the URL/Ready/Age columns match KServe's."""
    crd = one("CustomResourceDefinition")
    assert crd["metadata"]["name"] == "inferencegraphs.serving.kserve.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("serving.kserve.io", "Namespaced")
    assert spec["names"]["kind"] == "InferenceGraph" and spec["names"]["plural"] == "inferencegraphs"
    assert spec["names"]["shortNames"] == ["ig"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]] == [
        ("URL", ".status.url"), ("Ready", ".status.conditions[?(@.type=='Ready')].status"),
        ("Age", ".metadata.creationTimestamp")]


def test_rbac_grants_least_privilege() -> None:
    """Read graphs and services, patch graph status, get runtimes, list/watch EndpointSlices: nothing else."""
    grants = set()
    for doc in RENDERED:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                assert rule["apiGroups"] in (["serving.kserve.io"], ["discovery.k8s.io"])
                grants |= {(rule["apiGroups"][0], r, v) for r in rule["resources"] for v in rule["verbs"]}
    read = {"get", "list", "watch"}
    kserve = "serving.kserve.io"
    assert grants == ({(kserve, "inferencegraphs", v) for v in read} | {(kserve, "inferenceservices", v) for v in read}
                      | {(kserve, "inferencegraphs/status", "patch"), (kserve, "servingruntimes", "get"),
                         (kserve, "clusterservingruntimes", "get"),
                         ("discovery.k8s.io", "endpointslices", "list"),
                         ("discovery.k8s.io", "endpointslices", "watch")})
    account = one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    roles = {(d["kind"], d["metadata"]["name"]) for d in RENDERED if d["kind"] in ("Role", "ClusterRole")}
    for binding in (d for d in RENDERED if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                        "namespace": NAMESPACE}]


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_deployment_runs_router_and_sidecar_safely() -> None:
    """Non-root, read-only, unprivileged containers with resources, sharing the graph file through an emptyDir."""
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"router", "controller"}
    for c in containers.values():
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    router, controller = containers["router"], containers["controller"]
    (graph_mount,) = [m for m in router["volumeMounts"]]
    assert "emptyDir" in volumes[graph_mount["name"]] and graph_mount.get("readOnly") is True
    assert graph_mount["name"] in {m["name"] for m in controller["volumeMounts"]}
    # Only the sidecar holds API credentials.
    token_volumes = {n for n, v in volumes.items() if "projected" in v}
    assert not token_volumes & {m["name"] for m in router["volumeMounts"]}
    assert token_volumes & {m["name"] for m in controller["volumeMounts"]}

    assert router["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "tcpSocket" in router["livenessProbe"], "/readyz is 503 until a graph exists: not for liveness"
    assert router["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]

    parser = cli.build_parser()
    serve = parser.parse_args(router["args"])
    assert serve.command == "serve" and serve.reload
    env = {"POD_NAMESPACE": NAMESPACE}
    ctl = parser.parse_args(_expand(controller["args"], env))
    assert ctl.command == "controller" and ctl.namespace == NAMESPACE
    assert str(ctl.output) == serve.graph
    assert Path(serve.graph).parent.as_posix() == graph_mount["mountPath"]
    sample = [d for d in RENDERED_SAMPLES if d["metadata"]["name"] == ctl.name]
    assert len(sample) == 1 and sample[0]["metadata"]["namespace"] == NAMESPACE
    graph_url = {e["name"]: e for e in controller["env"]}["GRAPH_URL"]["value"]
    assert _expand([graph_url], env) == [f"http://{one('Service')['metadata']['name']}.{NAMESPACE}.svc.cluster.local"]


def test_service_autoscaler_and_budget_select_the_router_pods() -> None:
    """The Service, HPA and PDB all point at the Deployment's pods."""
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_and_kserve_compatible() -> None:
    """A compiling stage, a python:3.11-slim runtime, a numeric non-root user, and KServe's entrypoint."""
    steps = dockerfile()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("python:3.11") for f in froms)
    assert froms[-1].startswith("python:3.11-slim"), "the runtime stage carries no compiler"
    assert froms[0].split()[0].split("-")[-1] == froms[-1].split("-")[-1], "same Debian release: same ABI"
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "numeric, not root"
    assert any(w == "COPY" and a.startswith("--from=") for w, a in final), "only built artefacts are copied"
    (entrypoint,) = [args for word, args in final if word == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["graph-router"], "exec form, so container args are appended"
    assert not [w for w, _ in final if w == "CMD"], "no CMD: KServe gives only args"
    run = " ".join(a for w, a in steps if w == "RUN")
    assert "pip install ." in run and not re.search(r"\bcurl\b|\bwget\b", run)
    assert "compiled_modules()" in run, "the build checks that the request path came out compiled"
    assert 'graph-router = "graph_router.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_kserve_router_arguments_reach_serve() -> None:
    """`--graph-json JSON` with no subcommand is `serve`, as KServe's controller starts its router."""
    args = cli.build_parser().parse_args(["serve", "--graph-json", "{}"])
    assert args.command == "serve" and args.graph_json == "{}"
    assert cli.main(["--graph-json", "{not json"]) == 1
