"""Version manager: policies, refusal of bad versions, in-place updates, drain and release.

Uses a fake model (a JSON file standing in for a bundle) so each case is about the manager's
logic alone; the HTTP tests use real ONNX bundles.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from edgepack.runtime.errors import BundleError
from edgepack.runtime.serve.config import ServeConfig, VersionPolicy
from edgepack.runtime.serve.errors import RequestError, ServeError
from edgepack.runtime.serve.manager import ModelManager
from edgepack.runtime.serve.metrics import Metrics
from edgepack.runtime.specs import TensorSpec


class FakeModel:
    """Adds `offset` to x; `fail_load`/`fail_run` in the file make it a bad version."""

    inputs = (TensorSpec("x", (-1, 4), "float32"),)
    outputs = (TensorSpec("y", (-1, 4), "float32"),)
    engine_name = "fake"
    labels = None

    def __init__(self, path: Path):
        data = json.loads(path.read_text())
        if data.get("fail_load"):
            raise BundleError(f"{path}: checksum mismatch (fake)")
        self.offset = float(data["offset"])
        self.fail_run = bool(data.get("fail_run"))
        self.closed = False
        self.name, self.version = "fake", str(self.offset)

    def run(self, feeds):
        if self.fail_run:
            return {}            # declared output missing: smoke test must refuse
        return {"y": feeds["x"] + self.offset}

    def close(self):
        self.closed = True


def write(root: Path, model: str, version: str, **data) -> Path:
    path = root / model / f"{version}.edgepack"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)        # atomic, as the README tells users to update
    return path


def manager(root: Path, **kw) -> ModelManager:
    return ModelManager(root, ServeConfig(poll_interval=0, **kw), Metrics(), loader=FakeModel)


def offset_of(mgr: ModelManager, model: str = "m", version: str | None = None) -> float:
    with mgr.lease(model, version) as lv:
        return float(lv.model.run({"x": np.zeros((1, 4), np.float32)})["y"][0, 0])


def test_latest_policy_serves_newest_and_orders_versions_numerically(tmp_path):
    for v in ("2", "9", "10"):
        write(tmp_path, "m", v, offset=int(v))
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    assert sorted(mgr.snapshot()["m"]) == ["10"]          # "10" > "9" numerically
    assert offset_of(mgr) == 10.0
    with pytest.raises(RequestError) as info:
        offset_of(mgr, version="9")
    assert info.value.status == 404 and "loaded: 10" in info.value.message


@pytest.mark.parametrize("policy, loaded", [
    ("latest:2", ["2", "3"]), ("all", ["1", "2", "3"]), ("1,3", ["1", "3"])])
def test_policies_keep_the_versions_they_name(tmp_path, policy, loaded):
    for v in ("1", "2", "3"):
        write(tmp_path, "m", v, offset=int(v))
    mgr = manager(tmp_path, default_policy=VersionPolicy.parse(policy))
    mgr.sync(settle=False)
    assert sorted(mgr.snapshot()["m"]) == loaded
    assert offset_of(mgr) == 3.0                  # default route: newest loaded
    assert offset_of(mgr, version=loaded[0]) == float(loaded[0])


def test_default_route_is_the_numerically_newest_loaded_version_after_each_swap(tmp_path):
    for v in ("9", "10"):
        write(tmp_path, "m", v, offset=int(v))
    mgr = manager(tmp_path, default_policy=VersionPolicy.parse("all"))
    mgr.sync(settle=False)
    assert offset_of(mgr) == 10.0                 # "10" after "9", not as text
    write(tmp_path, "m", "11", offset=11)
    mgr.sync(settle=False)
    assert offset_of(mgr) == 11.0                 # the swap moved the default route


def test_bad_new_versions_are_refused_and_the_current_one_keeps_serving(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    write(tmp_path, "m", "2", fail_load=True)
    write(tmp_path, "m", "3", offset=3, fail_run=True)     # loads, fails the smoke test
    mgr.sync(settle=False)
    assert offset_of(mgr) == 1.0
    index = {r.version: r for r in mgr.index()}
    assert index["1"].state == "READY"
    assert index["2"].state == "UNAVAILABLE" and "checksum" in index["2"].reason
    assert index["3"].state == "UNAVAILABLE" and "smoke" in index["3"].reason
    assert mgr.metrics.counter("edgepack_model_load_failures_total",
                               (("model", "m"), ("version", "2"))) == 1
    mgr.sync(settle=False)       # unchanged bad files are not retried on every poll
    assert mgr.metrics.counter("edgepack_model_load_failures_total",
                               (("model", "m"), ("version", "2"))) == 1
    write(tmp_path, "m", "2", offset=2)    # fixed in place: picked up
    mgr.sync(settle=False)
    assert offset_of(mgr) == 2.0


def test_a_new_version_waits_until_its_file_stops_changing(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    write(tmp_path, "m", "2", offset=2)
    mgr.sync(settle=True)        # first sighting: not loaded yet
    assert offset_of(mgr) == 1.0
    mgr.sync(settle=True)        # unchanged since the last scan: loaded and swapped in
    assert offset_of(mgr) == 2.0


def test_in_flight_request_finishes_on_its_version_then_memory_is_released(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    with mgr.lease("m") as old:
        write(tmp_path, "m", "2", offset=2)
        mgr.sync(settle=False)
        assert old.retired and not old.model.closed     # still in use: not closed
        assert offset_of(mgr) == 2.0                    # new requests see version 2
        assert float(old.model.run({"x": np.zeros((1, 4), np.float32)})["y"][0, 0]) == 1.0
        model = old.model
    assert model.closed and old.model is None           # last lease out closed it


def test_removing_a_version_unloads_it_and_rolls_back(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    v2 = write(tmp_path, "m", "2", offset=2)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    with mgr.lease("m") as lv:
        model2 = lv.model
    v2.unlink()
    mgr.sync(settle=False)
    assert model2.closed
    assert sorted(mgr.snapshot()["m"]) == ["1"] and offset_of(mgr) == 1.0
    (tmp_path / "m" / "1.edgepack").unlink()
    mgr.sync(settle=False)
    with pytest.raises(RequestError) as info:
        offset_of(mgr)
    assert info.value.status == 404


def test_model_with_only_bad_versions_answers_503(tmp_path):
    write(tmp_path, "m", "1", fail_load=True)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    with pytest.raises(RequestError) as info:
        offset_of(mgr)
    assert info.value.status == 503
    assert not mgr.ready()


def test_leases_from_many_threads_balance_to_zero(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    errors = []

    def worker(i):
        for _ in range(200):
            try:
                offset_of(mgr)
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for n in range(2, 6):        # swap while the workers run
        write(tmp_path, "m", str(n), offset=n)
        mgr.sync(settle=False)
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert all(lv.refs == 0 for lv in mgr.snapshot()["m"].values())
    mgr.close()
    assert mgr.snapshot() == {}


def test_policy_parsing():
    assert VersionPolicy.parse("latest:3") == VersionPolicy("latest", 3)
    assert VersionPolicy.parse("2, 5") == VersionPolicy("specific", versions=("2", "5"))
    for bad in ("latest:0", "", "a b", "../x"):
        with pytest.raises(ServeError):
            VersionPolicy.parse(bad)


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        manager(tmp_path / "nope").sync(settle=False)


def test_engine_threads_share_the_cores_without_oversubscription(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert ServeConfig(workers=4).threads_for("onnxruntime") == 1
    assert ServeConfig(workers=2).threads_for("onnxruntime") == 2
    assert ServeConfig(workers=8).threads_for("onnxruntime") == 1
    assert ServeConfig(workers=4).threads_for("litert") == 4   # one request at a time per model
    assert ServeConfig(workers=4, engine_threads=3).threads_for("litert") == 3


def test_spin_wait_is_the_engine_default_unless_told(tmp_path, monkeypatch):
    assert ServeConfig().spin_wait_for(2) is None
    assert ServeConfig(engine_spin_wait=False).spin_wait_for(1) is None   # no workers to spin
    assert ServeConfig(engine_spin_wait=True).spin_wait_for(4) is True
    # ...and the manager's loader passes it to the runtime.
    import edgepack.runtime
    seen = []
    monkeypatch.setattr(edgepack.runtime, "load", lambda path, **kw: seen.append(kw))
    write(tmp_path, "m", "1")
    mgr = manager(tmp_path, engine_threads=2, engine="onnxruntime", engine_spin_wait=False)
    mgr._default_loader(next(tmp_path.rglob("*.edgepack")))
    assert seen[0]["threads"] == 2 and seen[0]["spin_wait"] is False


def test_histogram_buckets_are_cumulative_and_labels_escaped():
    m = Metrics()
    labels = (("model", 'we"ird\\name'), ("version", "1"))
    for seconds in (0.0004, 0.0005, 0.003, 0.2, 20.0):
        m.observe(labels, seconds)
    text = m.render()
    prefix = 'edgepack_inference_seconds_bucket{model="we\\"ird\\\\name",version="1",le='
    assert prefix + '"0.0005"} 2' in text        # bounds are inclusive (le)
    assert prefix + '"0.005"} 3' in text
    assert prefix + '"0.25"} 4' in text
    assert prefix + '"10"} 4' in text
    assert prefix + '"+Inf"} 5' in text
    assert 'edgepack_inference_seconds_count{model="we\\"ird\\\\name",version="1"} 5' in text


def test_per_model_policy_overrides_the_default(tmp_path):
    for model in ("a", "b"):
        for v in ("1", "2", "3"):
            write(tmp_path, model, v, offset=int(v))
    mgr = manager(tmp_path, default_policy=VersionPolicy.parse("latest:2"),
                  model_policies=(("b", VersionPolicy.parse("1")),))
    mgr.sync(settle=False)
    assert sorted(mgr.snapshot()["a"]) == ["2", "3"]
    assert sorted(mgr.snapshot()["b"]) == ["1"] and offset_of(mgr, "b") == 1.0


def test_close_waits_for_requests_in_flight_and_refuses_new_ones(tmp_path):
    write(tmp_path, "m", "1", offset=1)
    mgr = manager(tmp_path)
    mgr.sync(settle=False)
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def request():
        with mgr.lease("m") as lv:
            entered.set()
            release.wait(10)
            seen["closed_during"] = lv.model.closed

    worker = threading.Thread(target=request)
    worker.start()
    entered.wait(10)
    assert mgr.close(drain_timeout=0.1) is False           # still one request running
    with pytest.raises(RequestError) as info:
        offset_of(mgr)
    assert info.value.status == 503
    release.set()
    worker.join(10)
    assert seen["closed_during"] is False
    assert mgr.close(drain_timeout=1) is True
