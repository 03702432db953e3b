"""Every manifest an operator installs, validated by kubeconform `-strict` against JSON schemas
generated from the OpenAPI document of the cluster's Kubernetes version (and from the CRDs of
prometheus-operator and of this repository): a misspelt field, a field in the wrong place or a
value of the wrong type fails here, as the API server's strict field validation would refuse it.

Covered: the kustomize base, the base with its component, deploy/jibri/, the chart rendered with
its defaults and with every option (ServiceMonitor and PrometheusRule included), and, when the
repository has CustomResourceDefinitions (deploy/crds/, the chart's crds/), the CRDs themselves
and every custom resource of theirs found under deploy/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.tools import Checkers, checkers, kubectl
from tests.tools import helm

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = REPO / "charts" / "jibri-pod-controller"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
GENERATOR = REPO / "scripts" / "openapi2jsonschema.py"


def crd_files() -> list[Path]:
    return sorted([*DEPLOY.glob("crds/*.yaml"), *REPO.glob("charts/*/crds/*.yaml")])


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def tools() -> Checkers:
    return checkers()


@pytest.fixture(scope="module")
def own_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Schemas of this repository's CRDs, generated from the files as they are now."""
    crds = crd_files()
    if not crds:
        return None
    out = tmp_path_factory.mktemp("crd-schemas")
    subprocess.run(
        [sys.executable, str(GENERATOR), str(out), "--crds", *map(str, crds)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def kubeconform(tools: Checkers, own: Path | None, text: str) -> subprocess.CompletedProcess[str]:
    args = [str(tools.kubeconform), "-strict", "-summary", "-output", "text"]
    args += ["-schema-location", tools.schema_location()]
    if own is not None:
        args += ["-schema-location", tools.schema_location(own)]
    return subprocess.run(
        [*args, "-"], input=text, capture_output=True, text=True, timeout=120, check=False
    )


def assert_valid(tools: Checkers, own: Path | None, text: str, *, at_least: int) -> None:
    docs = documents(text)
    assert len(docs) >= at_least, text[:2000]
    result = kubeconform(tools, own, text)
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing skipped and nothing without a schema: every document was checked.
    assert f"Valid: {len(docs)}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def kustomize(directory: Path) -> str:
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def helm_template(*args: str) -> str:
    result = subprocess.run(
        [str(helm()), "template", "jpc", str(CHART), "--namespace", "jibri", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kustomize_base(tools: Checkers, own_schemas: Path | None) -> None:
    assert_valid(tools, own_schemas, kustomize(DEPLOY), at_least=7)


def test_kustomize_base_with_its_component(
    tools: Checkers, own_schemas: Path | None, tmp_path: Path
) -> None:
    relative = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "jibri",
                "resources": [relative],
                "components": [os.path.join(relative, "examples", "unauthenticated")],
            }
        )
    )
    assert_valid(tools, own_schemas, kustomize(tmp_path), at_least=7)


def test_jibri_example(tools: Checkers, own_schemas: Path | None) -> None:
    assert_valid(tools, own_schemas, kustomize(DEPLOY / "jibri"), at_least=2)


def test_chart_with_defaults(tools: Checkers, own_schemas: Path | None) -> None:
    assert_valid(tools, own_schemas, helm_template(), at_least=6)


def test_chart_with_every_option(tools: Checkers, own_schemas: Path | None) -> None:
    text = helm_template("--values", str(ALL_OPTIONS))
    kinds = {d["kind"] for d in documents(text)}
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= kinds
    assert_valid(tools, own_schemas, text, at_least=10)


def test_prometheus_operator_crds(tools: Checkers, own_schemas: Path | None) -> None:
    """The CRDs the chart's ServiceMonitor and PrometheusRule are checked against (and that the
    end-to-end tests install) are valid CustomResourceDefinitions of this Kubernetes version."""
    paths = [
        tools.prometheus_operator_crds / f"monitoring.coreos.com_{name}.yaml"
        for name in ("servicemonitors", "prometheusrules")
    ]
    assert_valid(tools, own_schemas, "---\n".join(p.read_text() for p in paths), at_least=2)


def test_crds_and_their_custom_resources(tools: Checkers, own_schemas: Path | None) -> None:
    """The repository's CRDs (once it has any) and an example of each of their kinds."""
    crds = crd_files()
    kinds: set[tuple[str, str]] = set()
    for path in crds:
        for doc in documents(path.read_text()):
            assert doc["kind"] == "CustomResourceDefinition", path
            kinds |= {(doc["spec"]["group"], doc["spec"]["names"]["kind"])}
        assert_valid(tools, own_schemas, path.read_text(), at_least=1)
    examples = 0
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in documents(path.read_text()):
            group = str(doc.get("apiVersion", "")).rpartition("/")[0]
            if (group, doc.get("kind")) in kinds:
                examples += 1
                assert_valid(tools, own_schemas, yaml.safe_dump(doc), at_least=1)
    # Each custom resource has an example an operator can start from.
    found = {
        (str(doc["apiVersion"]).rpartition("/")[0], doc["kind"])
        for path in DEPLOY.rglob("*.yaml")
        for doc in documents(path.read_text())
        if "apiVersion" in doc
    }
    assert kinds <= found, sorted(kinds - found)
    assert examples >= len(kinds)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d["spec"].__setitem__("replica", 2), "additional properties 'replica'"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__(
                "imagePullPolicy", ["Always"]
            ),
            "imagePullPolicy",
        ),
    ],
    ids=["misspelt-field", "wrong-type"],
)
def test_strict_schemas_refuse_a_broken_deployment(
    tools: Checkers, own_schemas: Path | None, change: Any, complaint: str
) -> None:
    deployment = next(d for d in documents(kustomize(DEPLOY)) if d["kind"] == "Deployment")
    change(deployment)
    result = kubeconform(tools, own_schemas, yaml.safe_dump(deployment))
    assert result.returncode != 0
    assert complaint in result.stdout, result.stdout


def test_prometheus_operator_schemas_refuse_a_broken_service_monitor(
    tools: Checkers, own_schemas: Path | None
) -> None:
    text = helm_template("--values", str(ALL_OPTIONS))
    monitor = next(d for d in documents(text) if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"  # the field is `interval`
    result = kubeconform(tools, own_schemas, yaml.safe_dump(monitor))
    assert result.returncode != 0
    assert "scrapeInterval" in result.stdout, result.stdout
