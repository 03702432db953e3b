"""Both install paths (the Helm chart and the kustomize base) give the same result, and every
document uses one set of names: labels, Secrets, key files, the namespace."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jibri_pod_controller.core.config import load_settings
from testbed.cluster import controller_env_from_deployment
from tests.tools import REPO, helm, kubectl

pytestmark = pytest.mark.timeout(3600)  # the first use may build helm and kubectl

CHART = REPO / "charts" / "jibri-pod-controller"
DOCS = {
    "README.md": REPO / "README.md",
    "docs/operations.md": REPO / "docs" / "operations.md",
    "docs/security.md": REPO / "docs" / "security.md",
    "docs/pools.md": REPO / "docs" / "pools.md",
    "NOTES.txt": CHART / "templates" / "NOTES.txt",
    "alerts.yaml": REPO / "deploy" / "prometheus" / "alerts.yaml",
    "deploy/jibri/jibri.conf": REPO / "deploy" / "jibri" / "jibri.conf",
    "deploy/jibri/deployment.yaml": REPO / "deploy" / "jibri" / "deployment.yaml",
}
RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
)


def _stream(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def helm_docs() -> list[dict[str, Any]]:
    # The README's release name and namespace.
    out = subprocess.run(
        [str(helm()), "template", "jibri-pod-controller", str(CHART), "-n", "jibri"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return _stream(out)


@pytest.fixture(scope="module")
def kustomize_docs() -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl()), "kustomize", str(REPO / "deploy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return _stream(out)


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"])


def _pod_annotations(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {})


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_both_paths_put_the_same_recommended_labels_on_the_pods(
    helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    helm_labels, kustomize_labels = _pod_labels(helm_docs), _pod_labels(kustomize_docs)
    for key in RECOMMENDED:
        assert helm_labels[key] == kustomize_labels[key], key


@pytest.mark.parametrize("kind", ["Service", "PodDisruptionBudget"])
def test_both_paths_select_the_pods_by_the_recommended_labels(
    kind: str, helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    selectors = []
    for docs in (helm_docs, kustomize_docs):
        found = [d for d in docs if d["kind"] == kind and "busy" not in d["metadata"]["name"]]
        [doc] = found
        spec = doc["spec"]
        selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
        assert _matches(selector, _pod_labels(docs))
        selectors.append(selector)
    assert selectors[0] == selectors[1]
    assert set(selectors[0]) <= set(RECOMMENDED)


def test_both_paths_have_the_same_network_policies_and_scrape_annotations(
    helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    for docs in (helm_docs, kustomize_docs):
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert len(policies) == 2
        peers = [peer for p in policies for rule in p["spec"]["ingress"] for peer in rule["from"]]
        prometheus = [p for p in peers if "namespaceSelector" in p]
        # Prometheus of any namespace, not one hard-coded "monitoring".
        assert prometheus == [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ]
    assert _pod_annotations(helm_docs) == _pod_annotations(kustomize_docs)
    assert _pod_annotations(helm_docs)["prometheus.io/scrape"] == "true"


def test_documents_select_the_controller_by_labels_both_paths_set(
    helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    used = 0
    for name, path in DOCS.items():
        text = path.read_text()
        # The original tool's label selects only the kustomize path's pods.
        assert not re.search(r"-l\s*app=jibri-pod-controller", text), name
        for selector in re.findall(r"-l (app\.kubernetes\.io/[^\s`]+)", text):
            if "{{" in selector:
                continue
            labels = dict(pair.split("=", 1) for pair in selector.split(","))
            for docs in (helm_docs, kustomize_docs):
                assert _matches(labels, _pod_labels(docs)), (name, selector)
            used += 1
    assert used >= 4


def test_one_name_for_each_secret_and_key_file() -> None:
    texts = {name: path.read_text() for name, path in DOCS.items()}
    everything = "\n".join(texts.values())
    # The two Secrets, and nothing that looks like a third.
    assert set(re.findall(r"\bjibri-webhook-[a-z0-9-]+(?![.\w-])", everything)) <= {
        "jibri-webhook-keys",
        "jibri-webhook-signing-key",
        "jibri-webhook-1",
        "jibri-webhook-2",
    }
    # Private keys end in .key, public ones are <kid>.pem.
    for private in re.findall(r"\bjibri-webhook[a-z0-9-]*\.key\b", everything):
        assert private.startswith("jibri-webhook-signing"), private
    for public in re.findall(r"\bjibri-webhook[a-z0-9-]*\.pem\b", everything):
        assert re.fullmatch(r"jibri-webhook-\d+\.pem", public), public
    # What Jibri reads is what the README stores and the Deployment mounts.
    conf_path = re.search(r'signing-key-path = "([^"]+)"', texts["deploy/jibri/jibri.conf"])
    assert conf_path
    key_file = Path(conf_path.group(1)).name
    jibri = _stream(texts["deploy/jibri/deployment.yaml"])[0]
    [volume] = [v for v in jibri["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "jibri-webhook-signing-key"
    assert [i["key"] for i in volume["secret"]["items"]] == [key_file]
    assert (
        f"create secret generic jibri-webhook-signing-key --from-file={key_file}"
        in texts["README.md"]
    )


def test_one_namespace_in_the_commands() -> None:
    for name, path in DOCS.items():
        text = path.read_text()
        assert not re.search(r"-n jitsi\b|--namespace[ =]jitsi\b", text), name
        for namespace in re.findall(r"kubectl -n ([a-z$\"{}A-Z_<>-]+)", text):
            assert namespace in ('"$NS"', "jibri", "<namespace>", "{{"), (name, namespace)


def test_both_paths_run_the_controller_with_the_same_settings(
    helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = []
    for docs in (helm_docs, kustomize_docs):
        env = controller_env_from_deployment(
            _one(docs, "Deployment"), namespace="jibri", pod_name="jibri-pod-controller-0"
        )
        assert env["JWT_KEYS_DIR"] == "/etc/jibri-pod-controller/keys"
        env["JWT_KEYS_DIR"] = str(tmp_path)
        settings.append(load_settings(env))
    assert settings[0] == settings[1]


@pytest.mark.parametrize(
    "field", ["replicas", "resources", "readinessProbe", "livenessProbe", "securityContext"]
)
def test_both_paths_give_the_pods_the_same_resources_probes_and_security(
    field: str, helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    def value(docs: list[dict[str, Any]]) -> Any:
        deployment = _one(docs, "Deployment")
        if field == "replicas":
            return deployment["spec"]["replicas"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return container[field]

    def normal(probe: Any) -> Any:
        # successThreshold 1 is the API's default; the chart leaves it out.
        return {k: v for k, v in probe.items() if (k, v) != ("successThreshold", 1)}

    ours, theirs = value(helm_docs), value(kustomize_docs)
    if field.endswith("Probe"):
        ours, theirs = normal(ours), normal(theirs)
    assert ours == theirs


def test_both_paths_protect_busy_jibris_alike(
    helm_docs: list[dict[str, Any]], kustomize_docs: list[dict[str, Any]]
) -> None:
    budgets = []
    for docs in (helm_docs, kustomize_docs):
        [busy] = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget" and "busy" in d["metadata"]["name"]
        ]
        budgets.append(busy["spec"])
    assert (
        budgets[0]
        == budgets[1]
        == {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {"app": "jibri", "state": "busy"}},
        }
    )
