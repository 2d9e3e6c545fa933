"""model.stream(): windows, context, state carried between runs, reset; chained stages."""
from __future__ import annotations

import numpy as np
import pytest

import toys
from edgepack.runtime import load, pack_bundle
from edgepack.runtime.errors import PipelineError
from edgepack.runtime.specs import TensorSpec
from edgepack.runtime.stages import StagedModel, frames_of, stage_entry

STATE = [{"input": "state", "output": "stateN", "init": 0.0}]


@pytest.fixture
def acc(tmp_path):
    path = pack_bundle(tmp_path / "acc.edgepack", toys.accumulator(), name="acc",
                       stream={"rate": 16000, "window": 160, "hop": 160, "state": STATE},
                       examples={"input": {"shape": [1, 160]}})
    with load(path) as model:
        yield model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunks_equal_one_call_over_the_whole_signal(acc, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-8, 9, 160 * 37 + 55).astype(np.float32)  # small ints: sums are exact
    stream = acc.stream()
    totals = [w.outputs["total"].item() for c in toys.random_chunks(x, rng, 700) for w in stream.windows(c)]
    assert len(totals) == 37  # the trailing 55 samples do not make a window
    whole = x[:160 * 37]
    one_call = acc.run({"input": whole[None], "state": np.zeros((1, 1), np.float32)})
    assert totals[-1] == one_call["total"].item()
    assert totals == np.cumsum(whole.reshape(37, 160).sum(axis=1)).tolist()
    assert stream.state["state"].item() == totals[-1]
    stream.reset()
    assert stream.state["state"].item() == 0.0
    again = [w.outputs["total"].item() for w in stream.windows(whole)]
    assert again == totals


def test_context_and_hop(tmp_path):
    # window 100 + context 20, hop 50: run k sees samples [50k - 20, 50k + 100), zeros before 0
    path = pack_bundle(tmp_path / "c.edgepack", toys.accumulator(), name="c",
                       stream={"rate": 1000, "window": 100, "hop": 50, "context": 20,
                               "state": [{"input": "state", "output": "stateN", "init": 0.0}]})
    x = np.arange(1, 401, dtype=np.float32)
    with load(path) as model:
        stream = model.stream()
        runs = [w for c in np.array_split(x, 9) for w in stream.windows(c)]
    padded = np.r_[np.zeros(20, np.float32), x]
    sums = [padded[50 * k:50 * k + 120].sum() for k in range(len(runs))]
    assert len(runs) == 7  # windows start at 0, 50, ..., 300 (300 + 100 = 400)
    assert [r.outputs["total"].item() for r in runs] == np.cumsum(sums).tolist()
    assert [r.t_s for r in runs] == [0.05 * k for k in range(7)]


def test_state_shape_init_dtype_and_constants_from_examples(tmp_path):
    path = pack_bundle(tmp_path / "vad.edgepack", toys.energy_vad(512, 64), name="vad",
                       stream={"rate": 16000, "window": 512, "context": 64,
                               "state": [{"input": "state", "output": "stateN", "init": 1.0}]},
                       examples={"sr": {"value": 16000}},
                       decode=[{"op": "segments", "scores": "output", "on": 0.5,
                                "min_silence_s": 0.1}])
    rng = np.random.default_rng(0)
    quiet, loud = rng.normal(0, 0.005, 16000), rng.normal(0, 0.3, 8000)
    x = np.concatenate([quiet, loud, quiet]).astype(np.float32)
    with load(path) as model:
        stream = model.stream()
        assert stream.config.input == "input" and stream.config.constants == {"sr": 16000}
        assert stream.state["state"].tolist() == [[1.0] * 4]
        pcm = (x * 32767).astype(np.int16)  # int16 PCM is accepted as is
        segs = [s for c in np.array_split(pcm, 13) for s in stream.push(c)] + stream.flush()
    assert len(segs) == 1
    assert abs(segs[0]["start_s"] - 1.0) <= 0.032 and abs(segs[0]["end_s"] - 1.5) <= 0.064


def test_stream_config_errors(tmp_path):
    path = pack_bundle(tmp_path / "bad.edgepack", toys.energy_vad(512, 64), name="bad",
                       stream={"rate": 16000, "window": 500, "context": 64,
                               "state": [{"input": "state", "output": "stateN"}]},
                       examples={"sr": {"value": 16000}})
    with load(path) as model:
        with pytest.raises(PipelineError, match=r"context 64 \+ window 500 = 564"):
            model.stream()
    # a stream the model cannot take fails at pack time (the check model.stream() makes)
    with pytest.raises(PipelineError, match=r"stream.state\[0\]"):
        pack_bundle(tmp_path / "bad2.edgepack", toys.energy_vad(512), name="bad2",
                    stream={"rate": 16000, "window": 512,
                            "state": [{"input": "state", "output": "nope"}]})
    with pytest.raises(PipelineError, match="cannot tell which input"):
        pack_bundle(tmp_path / "bad3.edgepack", toys.energy_vad(512), name="bad3",
                    stream={"rate": 16000, "window": 512})
    assert not (tmp_path / "bad2.edgepack").exists() and not (tmp_path / "bad3.edgepack").exists()
    path = pack_bundle(tmp_path / "none.edgepack", toys.accumulator(), name="none")
    with load(path) as model:
        with pytest.raises(PipelineError, match="declares no stream"):
            model.stream()


# -- chained stages ------------------------------------------------------------------------
def _three_stage_bundle(tmp_path):
    """features (160 samples -> 8 values) -> embed (4 frames, hop 2 -> 6) -> classify (3, hop 1)."""
    s1 = toys.dense(160, 8, name_in="audio", name_out="feat", seed=1, act="Tanh")
    s2 = toys.dense(8, 6, name_in="feats", name_out="emb", seed=2, frames=4, act="Relu")
    s3 = toys.dense(18, 2, name_in="embs", name_out="probs", seed=3, act="Sigmoid")
    f = lambda n, shape: TensorSpec(n, shape, "float32")  # noqa: E731
    stages = [
        stage_entry("features", "model.onnx", [f("audio", (1, 160))], [f("feat", (1, 8))],
                    stream={"rate": 16000, "window": 160}),
        stage_entry("embed", "stages/embed.onnx", [f("feats", (1, 4, 8))], [f("emb", (1, 4, 6))],
                    stream={"window": 4, "hop": 2}, frames={"output": "emb", "axis": 1}),
        stage_entry("classify", "stages/cls.onnx", [f("embs", (1, 18))], [f("probs", (1, 2))],
                    stream={"window": 3, "hop": 1},
                    preprocess={"embs": [{"op": "reshape", "shape": [1, 18]}]}),
    ]
    stages[0]["frames"] = {"output": "feat"}
    path = pack_bundle(tmp_path / "chain.edgepack", s1, name="chain",
                       outputs=[f("probs", (1, 2))], inputs=[f("audio", (1, 160))],
                       stages=stages, members={"stages/embed.onnx": s2, "stages/cls.onnx": s3},
                       labels=["a", "b"], task={"kind": "keyword"},
                       decode=[{"op": "events", "scores": "probs", "on": 0.7, "off": 0.5}])
    return path, (s1, s2, s3)


def test_chained_three_stages_equal_running_them_by_hand(tmp_path):
    import onnxruntime as ort
    path, (s1, s2, s3) = _three_stage_bundle(tmp_path)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(160 * 60) * np.repeat(rng.uniform(0, 1, 60), 160)).astype(np.float32)
    model = load(path)
    assert isinstance(model, StagedModel) and model.stage_names == ["features", "embed", "classify"]
    stream = model.stream()
    events = [e for c in np.array_split(x, 17) for e in stream.push(c)]

    # by hand: bare ONNX Runtime sessions and plain numpy windowing
    run = lambda m, feeds: ort.InferenceSession(m).run(None, feeds)[0]  # noqa: E731
    feats = np.stack([run(s1, {"audio": x[None, 160 * i:160 * (i + 1)]})[0] for i in range(60)])
    embs = [run(s2, {"feats": feats[None, 2 * k:2 * k + 4]})[0] for k in range((60 - 4) // 2 + 1)]
    embs = np.concatenate(embs)  # (4 frames per window) stacked
    probs = np.stack([run(s3, {"embs": embs[j:j + 3].reshape(1, 18)})[0]
                      for j in range(len(embs) - 2)])
    # the same hysteresis by hand: on 0.7 / off 0.5 per label
    expected, active = [], [False, False]
    # the j-th classifier window covers embed frames j..j+2; embed window k spans audio
    # windows 2k..2k+3 (0.01 s each), its 4 frames split that span evenly
    for j, p in enumerate(probs):
        k0, f0 = divmod(j, 4)
        start = 2 * k0 * 0.01 + f0 * 0.01
        k1, f1 = divmod(j + 2, 4)
        end = 2 * k1 * 0.01 + (f1 + 1) * 0.01
        for c in range(2):
            if not active[c] and p[c] >= 0.7:
                active[c] = True
                expected.append({"t_s": round((start + end) / 2, 6), "label": "ab"[c],
                                 "score": round(float(p[c]), 6)})
            elif active[c] and p[c] < 0.5:
                active[c] = False
    expected.sort(key=lambda e: e["t_s"])
    assert len(expected) >= 2
    assert [(e["label"], e["t_s"]) for e in events] == [(e["label"], e["t_s"]) for e in expected]
    np.testing.assert_allclose([e["score"] for e in events], [e["score"] for e in expected],
                               atol=1e-5)
    # each stage runs alone on its own example feeds
    outs = model.verify_stages()
    assert sorted(outs) == ["classify", "embed", "features"]
    assert outs["embed"]["emb"].shape == (1, 4, 6)
    model.close()


def test_stage_members_are_checksummed(tmp_path):
    import zipfile
    from edgepack.runtime.errors import ChecksumError
    path, _ = _three_stage_bundle(tmp_path)
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items["stages/cls.onnx"] = items["stages/cls.onnx"][:-1] + b"\x01"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in items.items():
            z.writestr(n, d)
    with pytest.raises(ChecksumError, match="stages/cls.onnx"):
        load(path)


def test_frames_of_splits_along_axis():
    from edgepack.runtime.stream import WindowResult
    r = WindowResult(0, 1.0, 1.4, {}, {"y": np.arange(8, dtype=np.float32).reshape(1, 4, 2)})
    frames, times = frames_of([r], "y", 1)
    assert frames.shape == (4, 2) and np.allclose(times[:, 0], [1.0, 1.1, 1.2, 1.3])
    frames, times = frames_of([r], "y", None)
    assert frames.shape == (1, 4, 2) and times.tolist() == [[1.0, 1.4]]


def test_verify_and_inspect_a_chained_bundle(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    path, _ = _three_stage_bundle(tmp_path)
    edgepack = str(Path(sys.executable).with_name("edgepack"))
    r = subprocess.run([edgepack, "verify", str(path)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run([edgepack, "inspect", str(path)], capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert "stage 1 embed: stages/embed.onnx (feats -> emb); stream window 4, hop 2 frames" in out
    assert "stage 0 features: model.onnx (audio -> feat); stream 16000 Hz, window 160" in out


def test_pack_stages_from_a_pipeline_file(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "feat.onnx").write_bytes(toys.dense(160, 8, name_in="audio", name_out="feat", seed=1))
    (tmp_path / "cls.onnx").write_bytes(toys.dense(24, 2, name_in="feats", name_out="probs",
                                                   seed=3, act="Sigmoid"))
    (tmp_path / "chain.json").write_text(json.dumps({
        "task": {"kind": "sound_events"},
        "decode": [{"op": "events", "scores": "probs", "on": 0.6}],
        "stages": [{"name": "feat", "stream": {"rate": 16000, "window": 160}},
                   {"name": "cls", "model": "cls.onnx", "stream": {"window": 3},
                    "preprocess": {"feats": [{"op": "reshape", "shape": [1, 24]}]}}]}))
    edgepack = str(Path(sys.executable).with_name("edgepack"))
    r = subprocess.run([edgepack, "pack", "feat.onnx", "--pipeline", "chain.json", "-o",
                        "chain.edgepack"], cwd=tmp_path, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    with load(tmp_path / "chain.edgepack") as model:
        assert isinstance(model, StagedModel)
        assert [s.model.path for s in (st.manifest for st in model.stages)] == \
            ["model.onnx", "stages/cls.onnx"]
        assert [s.name for s in model.outputs] == ["probs"]
        rng = np.random.default_rng(0)
        x = rng.standard_normal(16000).astype(np.float32)
        result = model.predict(x)
        assert set(result) == {"events"} and result["events"]
        streamed = model.stream()
        by_chunks = [e for c in np.array_split(x, 7) for e in streamed.push(c)] + streamed.flush()
        assert by_chunks == result["events"]


@pytest.mark.parametrize("change, code, message", [
    # 4 frames of 8 values = 32, but the classifier takes [1, 24]
    ({"stream": {"window": 4}}, 4,
     "stages[1]: a window of 4 frames of 'feat' (each [8]) is 32 values but input 'feats' "
     "is [1, 24] = 24; fix stages[1].stream.window/context or stages[0].frames, or add a "
     "preprocess step (e.g. reshape) for 'feats'"),
    ({"stream": {"window": 3, "state": [{"input": "feats", "output": "nope"}]}}, 4,
     "stages[1].stream.state[0] must be"),
    ({"stream": {"window": 3}, "preprocess": {"feats": [{"op": "nope"}]}}, 4,
     "unknown op 'nope'"),
    ({"stream": {"window": 3}, "examples": "x"}, 3, "stages[1].examples must be an object"),
])
def test_a_bad_stage_graph_fails_pack(tmp_path, change, code, message):
    """Stage pipelines are checked at pack time by the code load() uses: one error, exit
    3 (malformed entry) or 4 (a chain the runtime would refuse), and no bundle written."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "feat.onnx").write_bytes(toys.dense(160, 8, name_in="audio", name_out="feat", seed=1))
    (tmp_path / "cls.onnx").write_bytes(toys.dense(24, 2, name_in="feats", name_out="probs",
                                                   seed=3, act="Sigmoid"))
    good = {"name": "cls", "model": "cls.onnx", "stream": {"window": 3}}
    for stage in (good, {**good, **change}):
        (tmp_path / "chain.json").write_text(json.dumps({
            "decode": [{"op": "events", "scores": "probs", "on": 0.6}],
            "stages": [{"name": "feat", "stream": {"rate": 16000, "window": 160}}, stage]}))
        r = subprocess.run([str(Path(sys.executable).with_name("edgepack")), "pack", "feat.onnx",
                            "--pipeline", "chain.json", "-o", "chain.edgepack"], cwd=tmp_path,
                           capture_output=True, timeout=120)
        if stage is good:  # the same chain without the change packs
            assert r.returncode == 0, r.stderr.decode()
            (tmp_path / "chain.edgepack").unlink()
    assert r.returncode == code, r.stderr.decode()
    assert message in r.stderr.decode()
    assert len([line for line in r.stderr.decode().splitlines() if line.strip()]) == 1
    assert not (tmp_path / "chain.edgepack").exists()
