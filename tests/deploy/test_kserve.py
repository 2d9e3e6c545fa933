"""`edgepack kserve`: the YAML parses, and every field is one KServe's CRDs define.

kserve_crd_subset.json holds the parts of the published CRD schemas (types, required lists)
for the fields the output sets, cut from kserve/kserve by kserve_crd_subset.py; the check
runs offline.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgepack.cli.main import cli



def crd_subset() -> dict:
    return json.loads(Path(__file__).with_name("kserve_crd_subset.json").read_text())

_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


def generated(tmp: Path | None = None, device: str = "rpi4b") -> list[dict]:
    """The documents for a tiny adder bundle (also used by kserve_crd_subset.py)."""
    import tempfile
    from services import make_adder
    tmp = tmp or Path(tempfile.mkdtemp())
    bundle = make_adder(tmp / "adder.edgepack", 1.0)
    out = tmp / "adder.yaml"
    result = CliRunner().invoke(cli, ["kserve", str(bundle), "--image",
                                      "ghcr.io/example/edgepack-serve:0.1", "--storage",
                                      "oci://registry.local/models/adder:stable", "--device",
                                      device, "--namespace", "edge", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(out.read_text()))


def validate(doc, schema: dict, path: str, problems: list[str]) -> None:
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(doc, (int, str)) or isinstance(doc, bool):
            problems.append(f"{path}: int or string expected, got {doc!r}")
        return
    kind = schema.get("type")
    if kind and not isinstance(doc, _TYPES[kind]) or (kind == "integer" and isinstance(doc, bool)):
        problems.append(f"{path}: {kind} expected, got {type(doc).__name__}")
        return
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                problems.append(f"{path}: required field {key!r} missing")
        props = schema.get("properties")
        for key, value in doc.items():
            if props is not None:
                if key not in props:
                    problems.append(f"{path}.{key}: not a field of the CRD")
                else:
                    validate(value, props[key], f"{path}.{key}", problems)
            elif "additionalProperties" in schema:
                validate(value, schema["additionalProperties"], f"{path}.{key}", problems)
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            validate(item, schema.get("items", {}), f"{path}[{i}]", problems)


def test_kserve_yaml_parses_and_matches_the_crd_schemas(tmp_path):
    runtime, service = generated(tmp_path)
    for doc in (runtime, service):
        schema = crd_subset()["kinds"][f"{doc['apiVersion']}/{doc['kind']}"]
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        problems: list[str] = []
        validate(body, schema, doc["kind"], problems)
        assert problems == []
    # ServingRuntime: required fields and what makes KServe pick it for edgepack bundles.
    spec = runtime["spec"]
    assert spec["supportedModelFormats"] == [{"name": "edgepack", "version": "1",
                                              "autoSelect": True, "priority": 1}]
    assert spec["protocolVersions"] == ["v2"]
    container = spec["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["args"][:2] == ["serve", "/mnt/models/adder.edgepack"]
    assert runtime["metadata"] == {"name": "edgepack", "namespace": "edge",
                                   "labels": {"app.kubernetes.io/managed-by": "edgepack"},
                                   "annotations": {"prometheus.kserve.io/port": "8080",
                                                   "prometheus.kserve.io/path": "/metrics"}}
    # InferenceService: the model uses that runtime and storage; rpi4b is arm64.
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "edgepack", "version": "1"}
    assert (model["runtime"], model["storageUri"], model["protocolVersion"]) == (
        "edgepack", "oci://registry.local/models/adder:stable", "v2")
    terms = service["spec"]["predictor"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In",
                                            "values": ["arm64"]}]}]


def test_memory_request_comes_from_the_check_estimate(tmp_path):
    from edgepack.devices import check_bundle
    service = generated(tmp_path, device="generic-armv7l")[1]
    estimate = check_bundle(tmp_path / "adder.edgepack", "generic-armv7l") \
        .estimates["estimated_total_mb"]
    request = math.ceil(estimate * 1.25 / 16) * 16
    resources = service["spec"]["predictor"]["model"]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": f"{request}Mi"},
                         "limits": {"memory": f"{2 * request}Mi"}}
    assert service["metadata"]["annotations"]["edgepack.io/memory-estimate-mb"] == f"{estimate:g}"
    values = service["spec"]["predictor"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"]
    assert values == ["arm"]                            # armv7l -> kubernetes.io/arch=arm


def test_yaml_emitter_round_trips_awkward_values():
    from edgepack.kserve import to_yaml
    doc = {"a": "1", "b": "yes", "c": 'quote " and \\ and\nnewline', "d": [], "e": {},
           "f": [[1, 2], {"g": None, "h": True}], "weird key": 1.5, "ünï": "ç"}
    assert list(yaml.safe_load_all(to_yaml([doc, {"x": 1}]))) == [doc, {"x": 1}]


def test_the_schema_check_catches_unknown_and_missing_fields(tmp_path):
    runtime = generated(tmp_path)[0]
    schema = crd_subset()["kinds"]["serving.kserve.io/v1alpha1/ServingRuntime"]
    spec = dict(runtime["spec"], supportedModelFormat=[{"name": "edgepack"}])
    spec.pop("containers")
    problems: list[str] = []
    validate({"spec": spec}, schema, "ServingRuntime", problems)
    assert problems == ["ServingRuntime.spec: required field 'containers' missing",
                        "ServingRuntime.spec.supportedModelFormat: not a field of the CRD"]
