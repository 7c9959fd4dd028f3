"""Offline checks of Kubernetes manifests: schema validation (core kinds through
kubernetes-validate's copy of the Kubernetes API schema, CRDs through the schemas vendored in
``tests/deploy/schemas``) and ``kustomize build`` done here (no kustomize binary is packaged for
Debian or PyPI): resources, strategic-merge patches, ``labels`` and ``images``, the subset Guard's
kustomizations use."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

from .helpers import ROOT

SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
#: The oldest Kubernetes the manifests target (gRPC probes are GA from 1.27) and the newest the
#: installed kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kv_utils.latest_version())
DEFS_URI = "https://kubernetes.io/api/_definitions.json"
CRDS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.yaml",
    (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    ): "serving.kserve.io_v1alpha1_servingruntime.yaml",
    (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    ): "serving.kserve.io_v1beta1_inferenceservice.yaml",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# ---------------------------------------------------------------------- schemas
@cache
def k8s_definitions(version: str = K8S_VERSIONS[0]) -> dict[str, Any]:
    """The Kubernetes API definitions (strict variant) of ``version`` from kubernetes-validate."""
    v = kv_utils.major_minor(version)
    return kv_utils.schema_contents(
        f"kubernetes-json-schema/v{v}.0-local-strict/_definitions.json", version
    )


def _absolute_refs(node: Any) -> Any:
    """Copy of ``node`` with the definitions' document-relative ``$ref`` made absolute."""
    if isinstance(node, dict):
        out = {k: _absolute_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = DEFS_URI + ref
        return out
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _prepare(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve ``k8s:NAME`` refs and ``x-inline``, and make every object strict (unknown fields
    are errors: the API server would drop them silently)."""
    if isinstance(node, list):
        return [_prepare(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _prepare(v, defs) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("k8s:"):
        out["$ref"] = f"{DEFS_URI}#/$defs/io.k8s.api.core.v1.{ref[4:]}"
    inline = out.pop("x-inline", None)
    if inline is not None:
        base = defs[f"io.k8s.api.core.v1.{inline}"]["properties"]
        merged = {k: _absolute_refs(v) for k, v in base.items()}
        merged.update(out.get("properties", {}))
        out["properties"] = merged
    if "properties" in out and "additionalProperties" not in out:
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    raw = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    defs_doc = k8s_definitions()
    schema = _prepare(raw, defs_doc["$defs"])
    registry = referencing.Registry().with_resource(
        DEFS_URI, referencing.Resource.from_contents(defs_doc)
    )
    # (no check_schema: the CRDs' patterns are Go regular expressions, e.g. a "(?i)" after "^",
    # which Python's re refuses; they are compiled only where a manifest uses the field)
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(doc: dict[str, Any]) -> list[str]:
    """The schema errors of one manifest (empty: valid), for every Kubernetes version checked."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRDS:
        validator = crd_validator(*key)
        return [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"k8s {version}: {path}: {exc.message}")
    return errors


# ---------------------------------------------------------------------- kustomize
def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build DIRECTORY`` for what these kustomizations use."""
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "patches", "labels", "images"}
    assert not unknown, f"{kfile}: this resolver does not handle {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{kfile}: resource {entry} does not exist"
        objects += kustomize_build(path) if path.is_dir() else load_documents(path)
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}, f"{kfile}: only file patches are handled: {patch}"
        for p in load_documents(directory / patch["path"]):
            targets = [o for o in objects if _same_object(o, p)]
            assert len(targets) == 1, f"{kfile}: patch {patch['path']} matches {len(targets)}"
            merged = strategic_merge(targets[0], p)
            objects[objects.index(targets[0])] = merged
    for label in k.get("labels", []):
        assert set(label) <= {"pairs"}, f"{kfile}: only metadata labels are handled: {label}"
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in k.get("images", []):
        for container in _containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                new = image.get("newName", name)
                tag = image.get("newTag")
                container["image"] = f"{new}:{tag}" if tag else new
    return objects


def _same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["apiVersion"], a["kind"], a["metadata"]["name"]) == (
        b["apiVersion"],
        b["kind"],
        b["metadata"]["name"],
    )


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge for maps and for lists of named maps (containers, env,
    ports, volumes: merged by ``name``); other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = copy.deepcopy(base)
        new = []
        for item in patch:
            same = [i for i, x in enumerate(out) if x["name"] == item["name"]]
            if same:
                out[same[0]] = strategic_merge(out[same[0]], item)
            else:
                new.append(copy.deepcopy(item))
        return new + out  # kustomize puts the patch's new items first
    return copy.deepcopy(patch)


def _containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for o in objects:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        out += spec.get("containers", []) + spec.get("initContainers", [])
    return out


def canonical(objects: list[dict[str, Any]]) -> list[str]:
    """Objects as sorted JSON strings (to compare two builds regardless of order)."""
    return sorted(json.dumps(o, sort_keys=True) for o in objects)
