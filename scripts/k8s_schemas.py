"""Import the JSON schemas that kubeconform validates deploy/k8s against (offline).

Run once per upgrade of a schema's source, never by the tests; its output is committed
under deploy/k8s/schemas (deploy/k8s/schemas/SOURCES.md says where each came from):

- **Kubernetes kinds** from the ``local-strict`` schemas of one Kubernetes version that
  PyPI's ``kubernetes-validate`` ships (``kubernetes_validate/kubernetes-json-schema/
  vX.Y.Z-local-strict``). Those refer to a shared ``_definitions.json``; each kind used
  here is written standalone (the definitions it reaches copied into its own ``$defs``)
  as ``vX.Y.Z-standalone-strict/{kind}{-group}-{version}.json``, the layout kubeconform
  reads from a schema directory.
- **Custom resources** from the operators' CRD files: each served version's
  ``openAPIV3Schema`` becomes ``crds/{kind}-{group}-{version}.json``, made strict the way
  kubeconform's openapi2jsonschema does it (an object with properties admits no other
  field unless it preserves unknown fields; int-or-string and nullable spelled out).

    python -m scripts.k8s_schemas --kubernetes DIR --crd FILE [--crd FILE ...] \
        --out deploy/k8s/schemas
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Final

import yaml

KUBERNETES_VERSION: Final = "v1.32.0"
# (kind, group, version) of every built-in kind deploy/k8s uses.
KUBERNETES_KINDS: Final = (
    ("ConfigMap", "", "v1"),
    ("ServiceAccount", "", "v1"),
    ("Deployment", "apps", "v1"),
    ("PodDisruptionBudget", "policy", "v1"),
    ("NetworkPolicy", "networking.k8s.io", "v1"),
)
REF: Final = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(?P<name>.+)$")
NESTING_MAX: Final = 200


def kubernetes_file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}.json``."""
    suffix = f"-{group.partition('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def crd_file_name(kind: str, group: str, version: str) -> str:
    """``{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json``."""
    return f"{kind.lower()}-{group}-{version}.json"


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every definition it reaches (transitively) in its own ``$defs``."""
    reached: dict[str, Any] = {}
    pending = [_relinked(schema, reached)]
    while pending:
        pending.pop()
        for name in [n for n, v in reached.items() if v is None]:
            reached[name] = _relinked(definitions[name], reached)
            pending.append(reached[name])
    out = {k: v for k, v in _relinked(schema, reached).items() if k != "$id"}
    out["$defs"] = dict(sorted(reached.items()))
    return out


def _relinked(node: Any, reached: dict[str, Any], depth: int = 0) -> Any:
    """A copy of ``node`` whose $refs point into the same document; names it meets are
    added to ``reached`` (as None until copied)."""
    assert depth < NESTING_MAX, "schema nested deeper than NESTING_MAX"
    if isinstance(node, list):
        return [_relinked(item, reached, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref":
            match = REF.match(value)
            assert match, f"unexpected $ref {value}"
            reached.setdefault(match["name"], None)
            out[key] = f"#/$defs/{match['name']}"
        else:
            out[key] = _relinked(value, reached, depth + 1)
    return out


def strict_crd_schema(node: Any, depth: int = 0) -> Any:
    """openAPIV3Schema as a strict JSON schema (kubeconform's openapi2jsonschema rules)."""
    assert depth < NESTING_MAX, "schema nested deeper than NESTING_MAX"
    if isinstance(node, list):
        return [strict_crd_schema(item, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_crd_schema(value, depth + 1) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string") or out.get("format") == "int-or-string":
        out.pop("type", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_object = out.get("x-kubernetes-preserve-unknown-fields") is True
    closable = isinstance(out.get("properties"), dict) and "additionalProperties" not in out
    if closable and not open_object:
        out["additionalProperties"] = False
    return out


def import_kubernetes(source_dir: Path, out_dir: Path) -> list[Path]:
    definitions = json.loads((source_dir / "_definitions.json").read_text())["$defs"]
    target = out_dir / f"{KUBERNETES_VERSION}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, group, version in KUBERNETES_KINDS:
        name = kubernetes_file_name(kind, group, version)
        schema = json.loads((source_dir / name).read_text())
        written.append(_write(target / name, standalone(schema, definitions)))
    return written


def import_crd(crd_file: Path, out_dir: Path) -> list[Path]:
    written = []
    for crd in yaml.safe_load_all(crd_file.read_text()):
        if crd is None:  # an empty document (a leading or trailing ---)
            continue
        assert crd["kind"] == "CustomResourceDefinition", crd_file
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
            name = crd_file_name(kind, group, version["name"])
            written.append(_write(out_dir / "crds" / name, schema))
    return written


def _write(path: Path, schema: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes", type=Path, help="a kubernetes-validate local-strict dir")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="a CRD file")
    parser.add_argument("--out", type=Path, required=True, help="deploy/k8s/schemas")
    args = parser.parse_args()
    written = import_kubernetes(args.kubernetes, args.out) if args.kubernetes else []
    for crd_file in args.crd:
        written += import_crd(crd_file, args.out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
