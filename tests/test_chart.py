"""The Helm chart: lint, golden renders, secure defaults, RBAC, exposure and NetworkPolicies.

Renders come from the pinned helm that scripts/tools.sh builds. Three profiles: the default
values, a cloud install with S3 and an external MongoDB, and an on-prem install with the chart's
MongoDB and an NFS volume (the two values files docs/install.md shows).
Set CRYOKUBE_UPDATE_GOLDEN=1 to rewrite the golden renders after a deliberate chart change.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryokube.operator.metadata.settings import Settings
from support.tools import tool

RELEASE = "ck"
NAMESPACE = "cryokube"
PROFILES = {
    "default": None,
    "cloud-s3": "values-cloud-s3.yaml",
    "onprem": "values-onprem.yaml",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def helm(repo_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm on the chart folder's parent; output as text."""
    return subprocess.run(
        [str(tool("helm")), *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "HELM_CACHE_HOME": "/nonexistent", "HELM_CONFIG_HOME": "/nonexistent"},
    )


def values_args(repo_root: Path, profile: str) -> list[str]:
    name = PROFILES[profile]
    return [] if name is None else ["-f", str(repo_root / "tests/data/chart" / name)]


def render(repo_root: Path, profile: str, *extra: str) -> list[dict[str, Any]]:
    """``helm template`` the chart; the parsed documents in helm's order."""
    result = helm(
        repo_root,
        "template",
        RELEASE,
        "charts/cryokube",
        "--namespace",
        NAMESPACE,
        *values_args(repo_root, profile),
        *extra,
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=list(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def docs(repo_root: Path, profile: str) -> list[dict[str, Any]]:
    return render(repo_root, profile)


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects(docs, kind) if doc["metadata"]["name"].endswith(suffix)]
    return found


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def worker_defaults(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config = one(docs, "ConfigMap", "-worker-defaults")
    loaded: dict[str, Any] = yaml.safe_load(config["data"]["worker-defaults.yaml"])
    return loaded


def normalise(docs: list[dict[str, Any]]) -> str:
    """The render as YAML with the generated random keys replaced by a placeholder."""
    for doc in objects(docs, "Secret"):
        doc["data"] = dict.fromkeys(doc["data"], "<RANDOM>")
    return yaml.safe_dump_all(docs, sort_keys=False, width=100)


def test_helm_lint_strict(repo_root: Path, profile: str) -> None:
    result = helm(
        repo_root, "lint", "--strict", "charts/cryokube", *values_args(repo_root, profile)
    )
    assert "0 chart(s) failed" in result.stdout


def test_render_matches_golden(repo_root: Path, docs: list[dict[str, Any]], profile: str) -> None:
    golden = repo_root / "tests/data/chart" / f"render-{profile}.yaml"
    text = normalise(docs)
    if os.environ.get("CRYOKUBE_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs; rerun with CRYOKUBE_UPDATE_GOLDEN=1 after a deliberate change"
    )


def test_values_schema_is_generated_and_current(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_values_schema.py", "--check"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.replicaCount=2", "additional properties 'replicaCount' not allowed"),
        ("storage.mode=nfs", "value must be one of 'pvc', 's3'"),
        ("metadataService.port=70000", "maximum"),
    ],
)
def test_schema_rejects_bad_values(repo_root: Path, setting: str, message: str) -> None:
    result = helm(repo_root, "template", RELEASE, "charts/cryokube", "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_every_object_carries_the_standard_labels(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, doc["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "cryokube"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert len(doc["metadata"]["name"]) <= 63


def assert_container_hardened(where: str, security: dict[str, Any]) -> None:
    assert security["allowPrivilegeEscalation"] is False, where
    assert security["readOnlyRootFilesystem"] is True, where
    assert security["capabilities"]["drop"] == ["ALL"], where
    assert not security.get("privileged", False), where
    assert security.get("runAsUser", 1) != 0, where


def test_no_container_runs_as_root(docs: list[dict[str, Any]]) -> None:
    specs = list(pod_specs(docs))
    assert len(specs) >= 3
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            assert_container_hardened(f"{name}/{container['name']}", container["securityContext"])
    workers = worker_defaults(docs)
    assert workers["podSecurityContext"]["runAsNonRoot"] is True
    assert_container_hardened("worker defaults", workers["containerSecurityContext"])


def test_every_workload_has_probes_and_resource_requests(docs: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(docs):
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            assert "livenessProbe" in container, where
            assert "readinessProbe" in container, where
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= requests.keys(), where
            assert "memory" in container["resources"]["limits"], where


def test_operator_runs_one_replica_with_recreate(docs: list[dict[str, Any]]) -> None:
    operator = one(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    spec = operator["spec"]["template"]["spec"]
    assert (
        spec["serviceAccountName"] == one(docs, "ServiceAccount", "-operator")["metadata"]["name"]
    )
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["CRYOKUBE_METRICS_PORT"]["value"] == "9090"
    assert "CRYOKUBE_WATCH_NAMESPACES" not in env


EXPECTED_RULES = {
    ("", "events", "create"),
    ("events.k8s.io", "events", "create"),
    *(
        ("cryokube.io", r, v)
        for r in ("projects", "jobs")
        for v in ("get", "list", "watch", "patch")
    ),
    ("cryokube.io", "projects/status", "patch"),
    ("cryokube.io", "jobs/status", "patch"),
    *(("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")),
    *(("", "pods", v) for v in ("get", "list", "watch")),
    ("", "secrets", "create"),
    ("", "secrets", "get"),
}


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group, resource, verb in itertools.product(
            rule["apiGroups"], rule["resources"], rule["verbs"]
        )
    }


CRD_OBSERVATION = {
    ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")
}


def test_operator_rbac_is_exactly_the_least_privilege_set(docs: list[dict[str, Any]]) -> None:
    role = one(docs, "ClusterRole", "-operator")
    rules = granted(role)
    assert not any("*" in item for item in itertools.chain.from_iterable(rules))
    assert rules == EXPECTED_RULES | CRD_OBSERVATION
    binding = one(docs, "ClusterRoleBinding", "-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": role["metadata"]["name"], "namespace": NAMESPACE}
    ]


NAMESPACED_OBSERVATION = CRD_OBSERVATION | {("", "namespaces", v) for v in ("list", "watch")}
"""The only cluster-scoped reads kopf makes when it serves listed namespaces (it observes CRDs
and namespaces; kopf/_core/reactor/observation.py); the cluster tier runs it with just these."""


def test_watch_namespaces_grant_roles_only_there(repo_root: Path) -> None:
    docs = render(repo_root, "default", "--set", "operator.watchNamespaces={lab-a,lab-b}")
    (cluster_role,) = objects(docs, "ClusterRole")
    assert granted(cluster_role) == NAMESPACED_OBSERVATION
    (binding,) = objects(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    roles = [r for r in objects(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["lab-a", "lab-b"]
    assert all(granted(role) == EXPECTED_RULES for role in roles)
    (container,) = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CRYOKUBE_WATCH_NAMESPACES"] == "lab-a,lab-b"


CONSOLE_SUBMITS = {("cryokube.io", "jobs", "create")}
"""All the metadata service may do in Kubernetes: the console's form creates Job resources."""


@pytest.mark.parametrize("namespaces", [None, "{lab-a,lab-b}"])
def test_metadata_service_may_only_create_jobs(repo_root: Path, namespaces: str | None) -> None:
    extra = ["--set", f"operator.watchNamespaces={namespaces}"] if namespaces else []
    docs = render(repo_root, "default", *extra)
    account = one(docs, "ServiceAccount", "-metadata")["metadata"]["name"]
    spec = one(docs, "Deployment", "-metadata")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account
    assert spec["automountServiceAccountToken"] is True
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["CRYOKUBE_JOB_SUBMITTER"] == "kubernetes"
    kind = "Role" if namespaces else "ClusterRole"
    roles = [r for r in objects(docs, kind) if r["metadata"]["name"] == account]
    bindings = [b for b in objects(docs, f"{kind}Binding") if b["metadata"]["name"] == account]
    where = [r["metadata"].get("namespace") for r in roles]
    assert where == (["lab-a", "lab-b"] if namespaces else [None])
    assert all(granted(role) == CONSOLE_SUBMITS for role in roles)
    assert [b["metadata"].get("namespace") for b in bindings] == where
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": kind,
            "name": account,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for ``matchLabels`` (the chart uses no expressions)."""
    assert "matchExpressions" not in selector
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def test_console_is_reached_only_through_the_proxy(docs: list[dict[str, Any]]) -> None:
    services = objects(docs, "Service")
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)
    proxy_service = one(docs, "Service", "-auth-proxy")
    metadata_service = one(docs, "Service", "-metadata")
    backends = {
        path["backend"]["service"]["name"]
        for ingress in objects(docs, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {proxy_service["metadata"]["name"]}
    proxy_pods = one(docs, "Deployment", "-auth-proxy")["spec"]["template"]["metadata"]["labels"]
    matched = [
        name
        for name, doc in ((d["metadata"]["name"], d) for d in docs if d["kind"] in WORKLOAD_KINDS)
        if selects(
            {"matchLabels": proxy_service["spec"]["selector"]},
            doc["spec"]["template"]["metadata"]["labels"],
        )
    ]
    assert matched == [f"{RELEASE}-cryokube-auth-proxy"]
    assert selects({"matchLabels": proxy_service["spec"]["selector"]}, proxy_pods)
    alpha = yaml.safe_load(one(docs, "ConfigMap", "-auth-proxy")["data"]["alpha-config.yaml"])
    (upstream,) = alpha["upstreamConfig"]["upstreams"]
    assert upstream["uri"] == (
        f"http://{metadata_service['metadata']['name']}.{NAMESPACE}.svc:"
        f"{metadata_service['spec']['ports'][0]['port']}"
    )


@dataclass(frozen=True)
class Pod:
    """A pod the policies must govern: its component, namespace, labels and open ports."""

    component: str
    namespace: str
    labels: dict[str, str]
    ports: frozenset[int]


def chart_pods(docs: list[dict[str, Any]]) -> list[Pod]:
    """The chart's pods, plus a worker pod as the operator labels it, in and out of namespace."""
    pods = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            labels = template["metadata"]["labels"]
            ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
            pods.append(
                Pod(labels["app.kubernetes.io/component"], NAMESPACE, labels, frozenset(ports))
            )
    worker_labels = worker_defaults(docs)["podLabels"]
    pods.append(Pod("worker", NAMESPACE, worker_labels, frozenset()))
    pods.append(Pod("worker-elsewhere", "lab", worker_labels, frozenset()))
    return pods


def governing(policies: list[dict[str, Any]], pod: Pod, direction: str) -> list[dict[str, Any]]:
    return [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], pod.labels)
    ]


def peer_matches(peer: dict[str, Any], pod: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic is judged by selectors; ipBlocks are for outside
    if "namespaceSelector" in peer:
        # Every namespaceSelector the chart renders selects by name or admits all namespaces.
        names = peer["namespaceSelector"].get("matchLabels", {})
        wanted = names.get("kubernetes.io/metadata.name", pod.namespace)
        if wanted != pod.namespace:
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), pod.labels)


def allowed_ports(rules: list[dict[str, Any]], key: str, peer: Pod, namespace: str) -> set[int]:
    ports: set[int] = set()
    for rule in rules:
        if any(peer_matches(p, peer, namespace) for p in rule.get(key, [])):
            ports |= {p["port"] for p in rule["ports"] if p["protocol"] == "TCP"}
    return ports


def reachable(policies: list[dict[str, Any]], source: Pod, target: Pod) -> set[int]:
    """TCP ports of ``target`` that ``source`` may open under the rendered policies."""
    ports = set(target.ports)
    ingress = governing(policies, target, "Ingress")
    if ingress:
        allowed: set[int] = set()
        for policy in ingress:
            allowed |= allowed_ports(
                policy["spec"].get("ingress", []), "from", source, target.namespace
            )
        ports &= allowed
    egress = governing(policies, source, "Egress")
    if egress:
        allowed = set()
        for policy in egress:
            allowed |= allowed_ports(
                policy["spec"].get("egress", []), "to", target, source.namespace
            )
        ports &= allowed
    return ports


def test_network_policies_allow_exactly_the_platform_flows(docs: list[dict[str, Any]]) -> None:
    policies = objects(docs, "NetworkPolicy")
    pods = chart_pods(docs)
    service = 8080  # the metadata service's one port: console, user API and worker RPC
    expected = {
        ("auth-proxy", "metadata"): {service},
        ("operator", "metadata"): {service},
        ("worker", "metadata"): {service},
        ("worker-elsewhere", "metadata"): {service},
    }
    if any(p.component == "mongodb" for p in pods):
        expected[("metadata", "mongodb")] = {27017}
    proxy_policy = one(policies, "NetworkPolicy", "-auth-proxy")
    if {"namespaceSelector": {}} in proxy_policy["spec"]["ingress"][0]["from"]:
        # The default networkPolicy.ingressFrom admits every namespace (values.yaml says to
        # narrow it to the ingress controller); pods there meet the proxy's sign-in, no more.
        expected[("worker-elsewhere", "auth-proxy")] = {4180}
    flows = {
        (source.component, target.component): ports
        for source in pods
        for target in pods
        if source is not target and (ports := reachable(policies, source, target))
    }
    assert flows == expected


def test_network_policies_select_the_pods_they_name(docs: list[dict[str, Any]]) -> None:
    pods = chart_pods(docs)
    for policy in objects(docs, "NetworkPolicy"):
        suffix = policy["metadata"]["name"].removeprefix(f"{RELEASE}-cryokube-")
        selected = {
            p.component
            for p in pods
            if p.namespace == NAMESPACE and selects(policy["spec"]["podSelector"], p.labels)
        }
        if suffix in {"default-deny", "dns"}:
            assert selected == {p.component for p in pods if p.namespace == NAMESPACE}
        else:
            assert selected == {suffix.removesuffix("s")}, suffix


def test_operator_built_worker_pods_are_the_ones_the_policies_select(
    repo_root: Path, docs: list[dict[str, Any]]
) -> None:
    from cryokube.operator.manifests import WorkerConfig, build_child_job
    from cryokube.operator.models import parse_job, parse_project

    case = (repo_root / "tests/data/operator/input/pvc_sharded_gpu.yaml").read_text()
    project, job = yaml.safe_load_all(case.replace("{namespace}", "lab"))
    config = WorkerConfig.model_validate(worker_defaults(docs))
    child = build_child_job(parse_job(job), parse_project(project), config=config)
    labels = child["spec"]["template"]["metadata"]["labels"]
    worker = Pod("worker", "lab", labels, frozenset())
    assert selects(one(docs, "NetworkPolicy", "-workers")["spec"]["podSelector"], labels)
    metadata = one(docs, "NetworkPolicy", "-metadata")
    (rule,) = [
        rule
        for rule in metadata["spec"]["ingress"]
        if any(peer_matches(peer, worker, NAMESPACE) for peer in rule["from"])
    ]
    assert [port["port"] for port in rule["ports"]] == [8080]


def test_outside_traffic_reaches_only_the_proxy_and_the_api_server(
    docs: list[dict[str, Any]],
) -> None:
    policies = {
        p["metadata"]["name"].split("-cryokube-")[1]: p for p in objects(docs, "NetworkPolicy")
    }
    with_ip_blocks = {
        name
        for name, policy in policies.items()
        for direction in ("ingress", "egress")
        for rule in policy["spec"].get(direction, [])
        for peer in rule.get("to", rule.get("from", []))
        if "ipBlock" in peer
    }
    assert with_ip_blocks <= {"auth-proxy", "operator", "metadata", "workers"}
    assert "ingress" not in policies["operator"]["spec"]
    operator_ports = {
        port["port"] for rule in policies["operator"]["spec"]["egress"] for port in rule["ports"]
    }
    assert {443, 6443} <= operator_ports


def test_workers_get_the_configured_defaults(repo_root: Path) -> None:
    docs = render(
        repo_root,
        "cloud-s3",
        "--set",
        "workers.gpuResourceName=nvidia.com/mig-1g.10gb",
        "--set",
        "workers.image.tag=1.2.3",
        "--set",
        "workers.checkpointIntervalS=15",
    )
    workers = worker_defaults(docs)
    assert workers["gpuResourceName"] == "nvidia.com/mig-1g.10gb"
    assert workers["image"] == "ghcr.io/cryokube/worker:1.2.3"
    assert workers["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6e.xlarge"}
    assert workers["metadataURL"] == f"http://{RELEASE}-cryokube-metadata.{NAMESPACE}.svc:8080"
    # the workers' checkpoint interval reaches their pods' environment
    from cryokube.operator.manifests import WorkerConfig, build_child_job
    from cryokube.operator.models import parse_job, parse_project

    case = (repo_root / "tests/data/operator/input/s3_queued_cpu.yaml").read_text()
    project, job = yaml.safe_load_all(case.replace("{namespace}", "lab"))
    config = WorkerConfig.model_validate(workers)
    child = build_child_job(parse_job(job), parse_project(project), config=config)
    env = child["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CRYOKUBE_CHECKPOINT_INTERVAL_S", "value": "15"} in env


def test_worker_defaults_parse_into_the_operator_model(
    repo_root: Path, docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The operator reads the rendered ConfigMap through the same loader it uses at start-up, so
    # a key the chart renders and the operator does not know fails here, not in the cluster.
    from cryokube.operator.handlers.startup import load_worker_defaults

    config = one(docs, "ConfigMap", "-worker-defaults")
    path = tmp_path / "worker-defaults.yaml"
    path.write_text(config["data"]["worker-defaults.yaml"])
    workers = load_worker_defaults(path)
    values = yaml.safe_load((repo_root / "charts/cryokube/values.yaml").read_text())
    assert workers.pod_labels == values["workers"]["podLabels"]
    assert workers.container_security_context == values["containerSecurityContext"]
    assert workers.tolerations[0].key == "nvidia.com/gpu"
    assert workers.ssd_cache.mount_path == values["workers"]["ssdCache"]["mountPath"]
    assert workers.project_mount_path == values["storage"]["pvc"]["mountPath"]
    operator = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    (container,) = operator["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "worker-defaults"]
    assert env["CRYOKUBE_WORKER_DEFAULTS"] == f"{mount['mountPath']}/worker-defaults.yaml"


def test_mongodb_modes(repo_root: Path) -> None:
    internal = render(repo_root, "default")
    (statefulset,) = objects(internal, "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    external = render(repo_root, "cloud-s3")
    assert not objects(external, "StatefulSet")
    env = one(external, "Deployment", "-metadata")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    (uri,) = [e for e in env if e["name"] == "MONGODB_URI"]
    assert uri["valueFrom"]["secretKeyRef"] == {"name": "cryokube-mongodb", "key": "uri"}


def test_storage_modes(repo_root: Path) -> None:
    (claim,) = objects(render(repo_root, "onprem"), "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert not objects(render(repo_root, "cloud-s3"), "PersistentVolumeClaim")


def test_metadata_service_reads_s3_roots_like_the_workers(repo_root: Path) -> None:
    docs = render(
        repo_root, "cloud-s3",
        "--set", "storage.s3.endpointURL=https://s3.lab.example.org",
        "--set", "storage.s3.credentialsSecret=cryokube-s3",
    )  # fmt: skip
    (container,) = one(docs, "Deployment", "-metadata")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == "https://s3.lab.example.org"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": "cryokube-s3", "key": key}
    egress = one(docs, "NetworkPolicy", "-metadata")["spec"]["egress"]
    assert [{"protocol": "TCP", "port": 443}] in [rule["ports"] for rule in egress]  # the store
    (onprem,) = one(render(repo_root, "onprem"), "Deployment", "-metadata")["spec"]["template"][
        "spec"
    ]["containers"]
    assert not any(e["name"].startswith("AWS_") for e in onprem["env"])


@pytest.mark.parametrize(
    ("extra", "claim"),
    [
        ((), f"{RELEASE}-cryokube-projects"),
        (("--set", "storage.pvc.existingClaim=lab-nfs"), "lab-nfs"),
    ],
)
def test_metadata_service_mounts_the_project_claim_read_only(
    repo_root: Path, extra: tuple[str, ...], claim: str
) -> None:
    docs = render(repo_root, "onprem", "--set", "storage.pvc.mountPath=/data/projects", *extra)
    assert [c["metadata"]["name"] for c in objects(docs, "PersistentVolumeClaim")] == (
        [claim] if not extra else []
    )
    spec = one(docs, "Deployment", "-metadata")["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/data/projects", "readOnly": True}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = Settings.from_env({**env, "CRYOKUBE_TOKEN_SECRET": "s" * 32})
    assert settings.pvc_mounts == {f"{NAMESPACE}/{claim}": Path("/data/projects")}
    cloud = one(render(repo_root, "cloud-s3"), "Deployment", "-metadata")["spec"]["template"]
    assert "CRYOKUBE_PVC_MOUNTS" not in {e["name"] for e in cloud["spec"]["containers"][0]["env"]}
    assert not any("persistentVolumeClaim" in v for v in cloud["spec"]["volumes"])


def test_chart_crds_are_a_copy_of_the_generated_crds(repo_root: Path) -> None:
    generated = {p.name: p.read_bytes() for p in sorted((repo_root / "crds").glob("*.yaml"))}
    copied = {
        p.name: p.read_bytes() for p in sorted((repo_root / "charts/cryokube/crds").glob("*.yaml"))
    }
    assert copied == generated, (
        "regenerate the chart's copy: "
        "PYTHONSAFEPATH=1 .venv/bin/python -m cryokube.operator.crdgen charts/cryokube/crds"
    )


def test_notes_tell_how_to_reach_the_console(repo_root: Path, tmp_path: Path) -> None:
    # helm renders NOTES.txt only on install; render it as a ConfigMap from a copy of the chart.
    chart = tmp_path / "cryokube"
    shutil.copytree(repo_root / "charts/cryokube", chart)
    notes = (chart / "templates/NOTES.txt").read_text(encoding="utf-8")
    (chart / "templates/NOTES.txt").unlink()
    (chart / "templates/_notes.tpl").write_text(
        '{{- define "notes" -}}\n' + notes + "{{- end }}\n", encoding="utf-8"
    )
    (chart / "templates/notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include "notes" . | quote }}}\n',
        encoding="utf-8",
    )
    values = repo_root / "tests/data/chart/values-cloud-s3.yaml"
    result = helm(
        repo_root, "template", RELEASE, str(chart), "-f", str(values), "-s", "templates/notes.yaml"
    )
    text = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "https://cryokube.lab.example.org/" in text
    assert "https://cryokube.lab.example.org/oauth2/callback" in text
    assert "Allowed groups: cryo-em-lab." in text
    assert "kubectl apply --server-side -f charts/cryokube/crds/" in text


@pytest.mark.parametrize("name", [n for n in PROFILES.values() if n is not None])
def test_install_doc_shows_the_tested_values_files(repo_root: Path, name: str) -> None:
    text = (repo_root / "tests/data/chart" / name).read_text()
    values = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    doc = (repo_root / "docs/install.md").read_text()
    assert f"```yaml\n{values}```" in doc
