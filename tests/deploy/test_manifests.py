"""Every manifest in ``deploy/`` is valid offline: YAML linted (yamllint), core kinds validated
strictly against the Kubernetes API schema (kubernetes-validate) for the oldest and newest
Kubernetes targeted, CRDs (ServiceMonitor, PrometheusRule, ServingRuntime, InferenceService)
against their vendored schemas; the kustomizations build (here, and with ``kubectl kustomize``
where a kubectl is installed) and the objects they produce fit together (selectors, ports,
probes, security context, the upstream address)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import DEPLOY, ROOT
from .kube import canonical, kustomize_build, load_documents, validate

KUSTOMIZATIONS = [DEPLOY / "k8s" / "base", DEPLOY / "k8s" / "overlays" / "upstream"]
#: YAML that is not a Kubernetes object: kustomizations, Helm values
NOT_OBJECTS = {"kustomization.yaml", "values.yaml"}


def manifest_files() -> list[Path]:
    """Every Kubernetes object file (not kustomizations, Helm values, patches: a patch is
    validated as part of what its kustomization builds)."""
    files = sorted((DEPLOY / "k8s").rglob("*.yaml")) + sorted((DEPLOY / "kserve").rglob("*.yaml"))
    patches = {
        (k / p["path"]).resolve()
        for k in KUSTOMIZATIONS
        for p in yaml.safe_load((k / "kustomization.yaml").read_text()).get("patches", [])
    }
    return [f for f in files if f.name not in NOT_OBJECTS and f.resolve() not in patches]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", manifest_files(), ids=rel)
def test_manifest_validates(path: Path) -> None:
    docs = load_documents(path)
    assert docs, path
    for doc in docs:
        errors = validate(doc)
        assert not errors, f"{rel(path)} {doc['kind']}/{doc['metadata']['name']}: {errors}"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=rel)
def test_kustomization_builds_valid_objects(directory: Path) -> None:
    objects = kustomize_build(directory)
    for o in objects:
        assert not validate(o), (o["kind"], o["metadata"]["name"], validate(o))
    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # a cross-check where kubectl (with its built-in kustomize) exists
        out = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
        assert canonical(theirs) == canonical(objects)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=rel)
def test_objects_fit_together(directory: Path) -> None:
    objects = kustomize_build(directory)
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    guard = deployments["guard"]
    pod = guard["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8001, "http": 8000, "metrics": 8002}
    env = {e["name"]: e.get("value") for e in container["env"]}
    # probes on the health endpoints: gRPC health for start-up and readiness, HTTP live
    assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # security: non-root, read-only root, no capabilities; /tmp writable; artifact read-only
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["GUARD_ARTIFACT"]]["readOnly"] is True and "/tmp" in mounts
    # the stop: the kubelet waits longer than the preStop pause plus Guard's grace period
    grace = float(env["GUARD_GRACE_S"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace + 5
    # the Service, PDB, HPA and ServiceMonitor select/target this Deployment
    labels = pod["metadata"]["labels"]
    svc = services["guard"]
    assert selects(svc["spec"]["selector"], labels)
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)
    pdb = by_kind(objects, "PodDisruptionBudget")["guard"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["guard"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "guard"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "guard_in_flight_requests"
    assert container["resources"]["requests"]["cpu"]  # CPU utilisation needs a request
    sm = by_kind(objects, "ServiceMonitor")["guard"]
    assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    assert sm["spec"]["podTargetLabels"] == ["model"] and "model" in labels
    assert "prometheusrule" in {o["kind"].lower() for o in objects}
    # the image is set by the kustomization
    assert container["image"].startswith("registry.example.com/guard:")

    if directory.name == "upstream":
        host, _, port = env["GUARD_UPSTREAM"].partition(":")
        triton = services[host]
        assert int(port) in {p["port"] for p in triton["spec"]["ports"]}
        triton_pod = deployments["triton"]["spec"]["template"]
        assert selects(triton["spec"]["selector"], triton_pod["metadata"]["labels"])
        assert env["GUARD_UPSTREAM_MODEL"]
    else:
        assert "GUARD_UPSTREAM" not in env


def test_upstream_settings_exist() -> None:
    """The overlay's environment variables are settings the server reads."""
    from dataclasses import fields

    from server.settings import ENV_PREFIX, Settings

    names = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    for directory in KUSTOMIZATIONS:
        for o in kustomize_build(directory):
            if o["kind"] == "Deployment" and o["metadata"]["name"] == "guard":
                for e in o["spec"]["template"]["spec"]["containers"][0]["env"]:
                    if e["name"].startswith(ENV_PREFIX):
                        assert e["name"] in names, e["name"]


def test_validation_rejects_mistakes() -> None:
    """The checks bite: a misspelled field, a wrong type, a missing required field fail."""
    deployment = load_documents(DEPLOY / "k8s" / "base" / "deployment.yaml")[0]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert validate(bad)
    sm = load_documents(DEPLOY / "k8s" / "base" / "servicemonitor.yaml")[0]
    bad = copy.deepcopy(sm)
    bad["spec"]["podTargetLabel"] = ["model"]
    assert validate(bad)
    bad = copy.deepcopy(sm)
    del bad["spec"]["selector"]
    assert validate(bad)
    rule = load_documents(DEPLOY / "k8s" / "base" / "prometheusrule.yaml")[0]
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    assert validate(bad)
    runtime = load_documents(DEPLOY / "kserve" / "servingruntime.yaml")[0]
    bad = copy.deepcopy(runtime)
    bad["spec"]["containers"][0]["args"] = "--port 9000"  # a string, not a list
    assert validate(bad)
    isvc = load_documents(DEPLOY / "kserve" / "inferenceservice-predictor.yaml")[0]
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["model"]["protocolVersion"] = "v3"
    assert validate(bad)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["model"]["storageURI"] = "pvc://x"  # the field is storageUri
    assert validate(bad)


def test_kserve_runtime_matches_the_image() -> None:
    """The runtime's flags are ``guard serve`` flags; the transformer maps KServe's arguments."""
    from server.cli import build_parser

    runtime = load_documents(DEPLOY / "kserve" / "servingruntime.yaml")[0]
    (container,) = runtime["spec"]["containers"]
    args = [a.replace("{{.Name}}", "fmnist-guard") for a in container["args"]]
    ns = build_parser().parse_args(["serve", *args])
    assert (ns.http_port, ns.port, ns.artifact) == (8080, 9000, "/mnt/models")
    assert container["ports"][0]["containerPort"] == ns.http_port
    isvc = load_documents(DEPLOY / "kserve" / "inferenceservice-transformer.yaml")[0]
    (transformer,) = isvc["spec"]["transformer"]["containers"]
    assert transformer["command"] == ["/bin/sh", "-c"]
    # what KServe appends (transformer_custom.go) lands where the script reads it
    script = transformer["args"][0]
    appended = ["--model_name", "fmnist-guarded", "--predictor_host", "p.ns", "--http_port", "8080"]
    out = subprocess.run(
        ["/bin/sh", "-c", script.replace("exec /opt/guard/bin/guard", "echo"), *appended],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ns = build_parser().parse_args(out)
    assert (ns.model_name, ns.upstream, ns.http_port) == ("fmnist-guarded", "p.ns:80", 8080)


def test_yamllint() -> None:
    from yamllint import config, linter

    conf = config.YamlLintConfig(file=str(DEPLOY / ".yamllint"))
    problems = []
    for path in sorted(DEPLOY.rglob("*.yaml")) + sorted((ROOT / "tests/deploy/schemas").glob("*")):
        for p in linter.run(path.read_text(), conf, str(path)):
            problems.append(f"{rel(path)}:{p.line}:{p.column}: {p.message} ({p.rule})")
    assert not problems, "\n".join(problems)


def test_ignore_files_agree() -> None:
    """podman reads .containerignore, docker .dockerignore: the same build context for both."""
    assert (ROOT / ".containerignore").read_text() == (ROOT / ".dockerignore").read_text()
