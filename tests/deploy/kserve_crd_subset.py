"""Cut the parts of KServe's CRD schemas that `edgepack kserve` output uses into a small file.

    python tests/deploy/kserve_crd_subset.py KSERVE_CHECKOUT   # writes kserve_crd_subset.json

KSERVE_CHECKOUT is a clone (bare or not) of github.com/kserve/kserve; the schemas are its
config/crd/full/serving.kserve.io_{servingruntimes,inferenceservices}.yaml. For every field
the generated YAML sets, the subset keeps the CRD's type, `required` list and (for maps)
value schema; a field the CRD does not define makes this script fail, so the subset is a
check of the output against the published schema, not a copy of the output. The test reads
the subset offline (tests download nothing).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

CRDS = {("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
        ("serving.kserve.io/v1beta1", "InferenceService"):
            "serving.kserve.io_inferenceservices.yaml"}


def cut(doc, schema: dict, path: str) -> dict:
    out = {k: schema[k] for k in ("type", "required", "x-kubernetes-int-or-string")
           if k in schema}
    if isinstance(doc, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            if extra is None:
                raise SystemExit(f"{path}: the CRD defines no fields here")
            out["additionalProperties"] = {k: extra[k] for k in
                                           ("type", "x-kubernetes-int-or-string") if k in extra}
            return out
        out["properties"] = {}
        for key, value in doc.items():
            if key not in props:
                raise SystemExit(f"{path}.{key}: not a field of the CRD")
            out["properties"][key] = cut(value, props[key], f"{path}.{key}")
    elif isinstance(doc, list) and doc:
        out["items"] = cut(doc[0], schema["items"], f"{path}[]")
    return out


def main(checkout: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_kserve import generated           # the documents the test checks
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    subset = {"source": f"github.com/kserve/kserve@{commit} config/crd/full", "kinds": {}}
    for doc in generated(Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        key = (doc["apiVersion"], doc["kind"])
        crd = yaml.safe_load(subprocess.run(
            ["git", "-C", str(checkout), "show", f"HEAD:config/crd/full/{CRDS[key]}"],
            capture_output=True, text=True, check=True).stdout)
        version = next(v for v in crd["spec"]["versions"]
                       if v["name"] == doc["apiVersion"].split("/")[1])
        schema = version["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        subset["kinds"]["/".join(key)] = cut(body, schema, doc["kind"])
    out = Path(__file__).with_name("kserve_crd_subset.json")
    out.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
