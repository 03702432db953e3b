"""Generate kubeconform's strict, standalone JSON schemas from the sources of truth.

- Kubernetes' built-in kinds: from ``api/openapi-spec/swagger.json`` of the ``k8s.io/kubernetes``
  module of the cluster's version (every definition with an ``x-kubernetes-group-version-kind``).
- Custom resources: from CustomResourceDefinition files (each served version's
  ``openAPIV3Schema``), e.g. this repository's own CRDs and prometheus-operator's.

One file per kind and version, named ``<kind>_<group>_<version>.json`` (lower-case kind; the
group of a core kind is ``v1``), which is kubeconform's
``-schema-location '<dir>/{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}.json'``.

"Strict" as the API server's own field validation: an object that lists its properties accepts
no others (unless it preserves unknown fields), so a misspelt or misplaced field fails.
"Standalone": each file carries the definitions it refers to, so no file refers to another
(recursive types such as JSONSchemaProps stay references inside the file).

    python scripts/openapi2jsonschema.py OUT --swagger swagger.json --crds a.yaml b.yaml ...
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
# The API server accepts a number wherever a quantity ("1", "500m", "1Gi") is expected.
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
}
REF_PREFIX = "#/definitions/"


class _Loader(yaml.SafeLoader):
    """PyYAML reads a bare ``=`` as YAML 1.1's "value" tag; CRDs mean the string "="."""


_Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


def file_name(group: str, version: str, kind: str) -> str:
    return f"{kind.lower()}_{group or version}_{version}.json"


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which every object with listed properties forbids others.

    Walks only where schemas are (properties, items, ...), never into a map of property names,
    since a schema may describe a property called "properties" or "nullable" (JSONSchemaProps).
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "patternProperties", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict(value) for name, value in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    if isinstance(out.get("items"), list):
        out["items"] = [strict(item) for item in out["items"]]
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(item) for item in out[key]]
    if out.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        out.pop("format", None)
        out.update(copy.deepcopy(INT_OR_STRING))
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref.removeprefix(REF_PREFIX)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def kubernetes_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    definitions: dict[str, Any] = {
        name: SPECIAL.get(name, strict(schema)) for name, schema in swagger["definitions"].items()
    }
    schemas: dict[str, dict[str, Any]] = {}
    for name, schema in swagger["definitions"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            reachable: dict[str, Any] = {}
            todo = [name]
            while todo:
                current = todo.pop()
                if current in reachable:
                    continue
                reachable[current] = definitions[current]
                todo.extend(_refs(definitions[current]))
            root = copy.deepcopy(definitions[name])
            # kind and apiVersion must name this very kind (a Deployment is not an apps/v1 Pod).
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            props = root.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [api_version]}
            props["kind"] = {"type": "string", "enum": [gvk["kind"]]}
            root["required"] = sorted({*root.get("required", ()), "apiVersion", "kind"})
            root["definitions"] = reachable
            root["$schema"] = "http://json-schema.org/draft-04/schema#"
            schemas[file_name(gvk["group"], gvk["version"], gvk["kind"])] = root
    return schemas


def crd_schemas(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for path in paths:
        for doc in yaml.load_all(path.read_text(), Loader=_Loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    raise SystemExit(f"{path}: {kind} {version['name']} has no openAPIV3Schema")
                root = strict(schema)
                props = root.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
                props["kind"] = {"type": "string", "enum": [kind]}
                # The API server checks metadata itself; CRDs say only "type: object".
                props["metadata"] = {"type": "object"}
                root["required"] = sorted({*root.get("required", ()), "apiVersion", "kind"})
                root["$schema"] = "http://json-schema.org/draft-04/schema#"
                schemas[file_name(group, version["name"], kind)] = root
    return schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--swagger", type=Path)
    parser.add_argument("--crds", type=Path, nargs="*", default=[])
    args = parser.parse_args(argv)
    schemas: dict[str, dict[str, Any]] = {}
    if args.swagger is not None:
        schemas |= kubernetes_schemas(json.loads(args.swagger.read_text()))
    schemas |= crd_schemas(args.crds)
    if not schemas:
        print("openapi2jsonschema: no schema generated", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (args.out / name).write_text(json.dumps(schema, sort_keys=True))
    print(f"openapi2jsonschema: {len(schemas)} schemas in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
