"""KServe manifests for a bundle: a ServingRuntime running `edgepack serve` as a V2 runtime,
and an InferenceService that uses it, for K3s/KubeEdge fleets already on Kubernetes.

    docs = kserve_manifests(Path("digits.edgepack"), KServeConfig(image=..., storage_uri=...,
                            device="rpi4b"))
    text = to_yaml(docs)

Field names follow the CRDs of `serving.kserve.io`: v1alpha1 ServingRuntime
(spec.supportedModelFormats, spec.protocolVersions, spec.containers) and v1beta1
InferenceService (spec.predictor.model.modelFormat / runtime / storageUri / protocolVersion /
resources, spec.predictor.affinity). Memory requests come from `edgepack check`'s estimate
for the device profile; node affinity pins pods to the profile's CPU architecture.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.devices import check_bundle, load_profile
from edgepack.runtime import read_bundle
from edgepack.runtime.errors import InputError

MODEL_FORMAT = "edgepack"
MODEL_FORMAT_VERSION = "1"          # the bundle format's schema_version
CONTAINER_PORT = 8080               # what KServe routes to by default
# `uname -m` -> the kubernetes.io/arch node label (Go's GOARCH names).
K8S_ARCH = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm",
            "x86_64": "amd64", "amd64": "amd64"}


@dataclass(frozen=True)
class KServeConfig:
    """What the manifests need beyond the bundle."""

    image: str                       # a container image with edgepack[onnx|litert,serve]
    storage_uri: str                 # where KServe's storage initializer fetches the model
    device: str                      # device profile: memory estimate and node architecture
    name: str | None = None          # InferenceService name [the bundle's name]
    runtime_name: str = "edgepack"
    namespace: str | None = None
    model_path: str | None = None    # path of the bundle in the pod [/mnt/models/<file>]
    headroom: float = 1.25           # memory request = estimate x headroom
    cpu: str = "1"


def dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label) from a bundle name."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    if not name:
        raise InputError(f"cannot make a Kubernetes name from {text!r}: pass --name")
    return name


def kserve_manifests(bundle: Path, config: KServeConfig) -> list[dict[str, Any]]:
    """[ServingRuntime, InferenceService] as plain dicts; raises DeviceError/BundleError."""
    manifest = read_bundle(bundle).manifest
    profile = load_profile(config.device)
    report = check_bundle(bundle, profile)
    arch = K8S_ARCH.get(profile.arch)
    if arch is None:
        raise InputError(f"device {profile.name} has arch {profile.arch}, which has no "
                         f"kubernetes.io/arch name here (known: {sorted(K8S_ARCH)})")
    estimate = float(report.estimates.get("estimated_total_mb") or 64)
    request_mi = int(math.ceil(estimate * config.headroom / 16.0) * 16)
    name = dns_name(config.name or manifest.name)
    runtime = dns_name(config.runtime_name)
    model_path = config.model_path or f"/mnt/models/{Path(bundle).name}"
    metadata = {"namespace": config.namespace} if config.namespace else {}
    labels = {"app.kubernetes.io/managed-by": "edgepack"}
    serving_runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime, **metadata, "labels": labels,
                     "annotations": {"prometheus.kserve.io/port": str(CONTAINER_PORT),
                                     "prometheus.kserve.io/path": "/metrics"}},
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION,
                                       "autoSelect": True, "priority": 1}],
            "protocolVersions": ["v2"],
            "multiModel": False,
            "containers": [{
                "name": "kserve-container",
                "image": config.image,
                "command": ["edgepack"],
                "args": ["serve", model_path, "--host", "0.0.0.0",
                         "--port", str(CONTAINER_PORT)],
                "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready",
                                               "port": CONTAINER_PORT}},
                "resources": {"requests": {"cpu": config.cpu, "memory": f"{request_mi}Mi"},
                              "limits": {"memory": f"{2 * request_mi}Mi"}},
            }],
        },
    }
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, **metadata, "labels": labels,
                     "annotations": {"edgepack.io/bundle-version": str(manifest.version),
                                     "edgepack.io/device": profile.name,
                                     "edgepack.io/memory-estimate-mb": f"{estimate:g}"}},
        "spec": {"predictor": {
            "model": {
                "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
                "runtime": runtime,
                "storageUri": config.storage_uri,
                "protocolVersion": "v2",
                "resources": {"requests": {"cpu": config.cpu, "memory": f"{request_mi}Mi"},
                              "limits": {"memory": f"{2 * request_mi}Mi"}},
            },
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": [arch]}]}]}}},
        }},
    }
    return [serving_runtime, inference_service]


# --- a tiny YAML emitter: block style, every string double-quoted (JSON escapes are valid
# YAML double-quoted escapes), so "1", "yes" or "on" never turn into numbers or booleans.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}{_key(key)}: {_empty(item) if isinstance(item, (dict, list)) else _scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                lines: list[str] = []
                _emit(item, indent + 2, lines)
                first = lines[0][indent + 2:] if isinstance(item, dict) else lines[0].lstrip()
                if isinstance(item, dict):
                    out.append(f"{pad}- {first}")
                    out.extend(lines[1:])
                else:
                    out.append(f"{pad}-")
                    out.extend(lines)
            else:
                out.append(f"{pad}- {_empty(item) if isinstance(item, (dict, list)) else _scalar(item)}")
    else:
        out.append(pad + _scalar(value))


def _empty(value: Any) -> str:
    return "{}" if isinstance(value, dict) else "[]"


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Several YAML documents, separated by `---`."""
    parts = []
    for doc in documents:
        lines: list[str] = []
        _emit(doc, 0, lines)
        parts.append("\n".join(lines) + "\n")
    return "---\n" + "---\n".join(parts)


__all__ = ["K8S_ARCH", "KServeConfig", "dns_name", "kserve_manifests", "to_yaml"]
