"""One validation layer for manifest.json (issue 12 item 5): every field's type and range is
checked once, with its JSON path in a one-line ManifestError; a fuzzer finds no foreign
exception escaping read_bundle, load or verify."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.cli.main import cli
from edgepack.runtime import load, pack_bundle, read_bundle
from edgepack.runtime.errors import ManifestError


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def rich(tmp_path_factory, conv_onnx) -> dict[str, bytes]:
    """A bundle using most fields, the §7 ones included, as its members."""
    path = pack_bundle(
        tmp_path_factory.mktemp("schema") / "rich.edgepack", conv_onnx, name="rich",
        labels=["cat", "dog", "bird", "fish"],
        preprocess={"x": [{"op": "scale", "factor": 0.5}]},
        postprocess={"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]},
        quantization={"mode": "none"}, validation={"samples": 4},
        task={"kind": "classify"}, assets={"tokenizer": b'{"a": 1}'},
        examples={"x": {"range": [0.0, 1.0]}},
        stream={"rate": 16000, "window": 8, "hop": 8, "context": 0})
    return _members(path)


def _manifest(members) -> dict:
    return json.loads(members["manifest.json"])


def _with(members, manifest: dict | bytes) -> dict[str, bytes]:
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    return {**members, "manifest.json": raw}


def _refusal(tmp_path, members) -> str:
    path = tmp_path / "bad.edgepack"
    path.write_bytes(_zip(members))
    with pytest.raises(ManifestError) as info:
        read_bundle(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def _edit(**changes):
    def apply(m):
        for dotted, value in changes.items():
            node, keys = m, dotted.split("/")
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[keys[-1]] = value
    return apply


# The reproductions, then one per kind of field.
@pytest.mark.parametrize("edit, words", [
    (_edit(**{"inputs/0/dtype": ["float32"]}), "inputs[0].dtype must be one of"),
    (_edit(**{"outputs/0/quantization": {"scale": [2**64], "zero_point": [0]}}),
     "outputs[0].quantization.scale[0] must be an integer that fits in 64 bits"),
    (_edit(**{"inputs/0/shape": [1, 10**12]}), "inputs[0].shape must be"),
    (_edit(**{"inputs/0/shape": [-1, 3, 65536, 65536]}), "at most 2147483648 elements"),
    (_edit(**{"inputs/0/shape": [-1, 0, 8, 8]}), "inputs[0].shape must be"),
    (_edit(**{"inputs/0/shape": [-2, 3, 8, 8]}), "inputs[0].shape must be"),
    (_edit(**{"preprocess": {"x": [{"op": "scale", "factor": 2**64}]}}),
     "preprocess.x[0].factor must be an integer that fits in 64 bits"),
    (_edit(**{"validation": {"samples": -2**70}}), "validation.samples must be an integer"),
    (_edit(**{"outputs/0/quantization": {"scale": [1.0], "zero_point": [2**40]}}),
     "outputs[0].quantization.zero_point[0] must be an integer in"),
    (_edit(**{"outputs/0/quantization": {"scale": [1e39], "zero_point": [0]}}),
     "outputs[0].quantization.scale[0] must be a finite number > 0"),
    (_edit(**{"outputs/0/quantization": {"scale": [1.0], "zero_point": [0], "axis": 9}}),
     "outputs[0].quantization.axis must be an integer in [-2, 1]"),
    (_edit(**{"inputs/0/layout": 7}), "inputs[0].layout must be a non-empty string or null"),
    (_edit(**{"inputs/0/name": ""}), "inputs[0].name must be a non-empty string"),
    (_edit(**{"model/opset": 10**6}), "model.opset must be an integer in [1, 1000]"),
    (_edit(**{"model/path": ["model.onnx"]}), "model.path must be a non-empty string"),
    (_edit(**{"files/model.onnx/bytes": -1}), "files['model.onnx'].bytes must be an integer"),
    (_edit(**{"files/model.onnx/sha256": "abc"}), "files['model.onnx'].sha256 must be 64"),
    (_edit(**{"labels": {"x": 1}}), "labels must be a non-empty string"),
    (_edit(**{"source": []}), "source must be an object"),
    (_edit(**{"task": {"kind": 5}}), "task.kind must be a non-empty string"),
    (_edit(**{"assets": {"tokenizer": ["a"]}}), "assets['tokenizer'] must name a member"),
    (_edit(**{"decode": [{"op": 3}]}), "decode[0] must be a step"),
    (_edit(**{"encode": {"op": "tokenize"}}), "encode must be a list"),
    (_edit(**{"stream": {"rate": 10**15}}), "stream.rate must be an integer in [1,"),
    (_edit(**{"stream": {"hop": "8"}}), "stream.hop must be an integer"),
    (_edit(**{"stream": {"state": [{"input": "x", "output": "logits", "init": "zero"}]}}),
     "stream.state[0].init must be a finite number"),
    (_edit(**{"stages": [{"name": "a", "model": "nope.onnx"}]}),
     "stages[0].model must name a member listed in files"),
    (_edit(**{"stages": [{"model": "model.onnx", "inputs": [{"name": "x", "shape": [1, 10**12],
                                                            "dtype": "float32"}]}]}),
     "stages[0].inputs[0].shape must be"),
    (_edit(**{"examples": {"x": {"range": [1.0, float("inf")]}}}),
     "examples['x'].range must be two finite numbers"),
    (_edit(**{"examples": {"x": {"shape": [1, 10**12]}}}), "examples['x'].shape must be"),
    (_edit(**{"examples": {"x": []}}), "examples['x'] must be an object"),
])
def test_each_field_is_checked_with_its_path(tmp_path, rich, edit, words):
    manifest = _manifest(rich)
    edit(manifest)
    message = _refusal(tmp_path, _with(rich, manifest))
    assert words in message and "bad.edgepack: manifest.json: " in message


def test_a_huge_integer_literal_is_a_manifest_error(tmp_path, rich):
    text = rich["manifest.json"].replace(b'"samples": 4', b'"samples": ' + b"9" * 4301)
    assert text != rich["manifest.json"]
    assert "integer of 4301 digits" in _refusal(tmp_path, _with(rich, text))


def test_deep_nesting_is_a_manifest_error(tmp_path, rich):
    manifest = _manifest(rich)
    manifest["validation"] = {"deep": json.loads("[" * 200 + "]" * 200)}
    assert "nested more than" in _refusal(tmp_path, _with(rich, manifest))
    text = rich["manifest.json"].replace(b'"samples": 4', b'"samples": ' + b"[" * 100_000)
    assert "not valid JSON" in _refusal(tmp_path, _with(rich, text))


def test_the_rich_bundle_itself_loads_and_verifies(tmp_path, rich):
    path = tmp_path / "rich.edgepack"
    path.write_bytes(_zip(rich))
    with load(path) as model:
        assert model.manifest.task_kind == "classify"
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output


def test_verify_of_a_huge_declared_shape_is_exit_3(tmp_path, rich):
    manifest = _manifest(rich)
    manifest["inputs"][0]["shape"] = [1, 10**12]
    path = tmp_path / "huge.edgepack"
    path.write_bytes(_zip(_with(rich, manifest)))
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 3 and "inputs[0].shape" in result.output


# --- fuzzing: only edgepack errors ever escape ---------------------------------------------------
json_leaf = (st.none() | st.booleans()
             | st.integers(-2**70, 2**70) | st.sampled_from([0, 1, -1, 2**31, 2**63, -2**63 - 1])
             | st.floats(allow_nan=True, allow_infinity=True)
             | st.text(max_size=10) | st.sampled_from(["float32", "int8", "x", "logits",
                                                        "model.onnx", "labels.txt", "softmax"]))
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.sampled_from(["op", "name", "shape", "dtype"]),
                      children, max_size=4),
    max_leaves=10)
TOP_KEYS = ["format", "schema_version", "name", "version", "created", "model", "inputs",
            "outputs", "preprocess", "postprocess", "labels", "source", "quantization",
            "validation", "requires", "files", "task", "assets", "encode", "decode", "stream",
            "stages", "examples"]


def _containers(node, found=None) -> list:
    """Every object and list in the document, the root first."""
    found = [] if found is None else found
    if isinstance(node, (dict, list)):
        found.append(node)
        for child in (node.values() if isinstance(node, dict) else node):
            _containers(child, found)
    return found


class _HypothesisChoices:
    """Mutation choices drawn by hypothesis (shrinks a failure to a minimal manifest)."""

    def __init__(self, data):
        self._data = data

    def pick(self, options: list):
        return self._data.draw(st.sampled_from(options))

    def index(self, size: int) -> int:
        return self._data.draw(st.integers(0, size - 1))

    def value(self):
        return self._data.draw(json_values)


class _SeededChoices:
    """The same choices from a seeded random.Random: the long run's 10,000 examples cost
    what verify costs, not what hypothesis's generation engine costs (about 4/5 of the
    hypothesis run's time was spent drawing, not verifying)."""
    LEAVES = [None, True, False, 0, 1, -1, 2**31, 2**63, -2**63 - 1, 2**70, -2**70,
              float("nan"), float("inf"), -float("inf"), 0.5, -1e300, 1e-45,
              "", "float32", "int8", "x", "logits", "model.onnx", "labels.txt", "softmax"]
    KEYS = ["op", "name", "shape", "dtype", "", "k", "\u00e9"]

    def __init__(self, seed: int):
        import random
        self._rng = random.Random(seed)

    def pick(self, options: list):
        return self._rng.choice(options)

    def index(self, size: int) -> int:
        return self._rng.randrange(size)

    def value(self, depth: int = 0):
        rng = self._rng
        kind = rng.random()
        if depth >= 2 or kind < 0.6:
            if rng.random() < 0.25:
                return rng.randint(-2**40, 2**40)
            if rng.random() < 0.15:
                return "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(0, 10)))
            return rng.choice(self.LEAVES)
        if kind < 0.8:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(self.KEYS): self.value(depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate(choices, manifest: dict) -> None:
    """Pick any object or list of the manifest (uniformly, so deep fields such as
    inputs[0].quantization get as much attention as top-level ones) and replace, delete or
    add one value in it."""
    node = choices.pick(_containers(manifest))
    action = choices.pick(["replace", "delete", "add"])
    if isinstance(node, dict):
        keys = sorted(node) or ["op"]
        key = choices.pick(keys) if action != "add" else \
            choices.pick(TOP_KEYS + ["op", "shape", "scale", "axis", "k"])
        if action == "delete":
            node.pop(key, None)
        else:
            node[key] = choices.value()
    elif isinstance(node, list):
        if action == "add" or not node:
            node.append(choices.value())
        elif action == "delete":
            node.pop(choices.index(len(node)))
        else:
            node[choices.index(len(node))] = choices.value()


def _only_edgepack_errors(tmp_path, members: dict[str, bytes]) -> int:
    path = tmp_path / "fuzz.edgepack"
    path.write_bytes(_zip(members))
    # `edgepack verify` is read_bundle + load + one run: an EdgepackError is the only
    # acceptable failure; any other exception escapes the CLI's error mapping and shows up
    # here as result.exception.
    result = CliRunner().invoke(cli, ["verify", str(path)])
    if not isinstance(result.exception, (SystemExit, type(None))):
        raise result.exception
    assert result.exit_code in (0, 2, 3, 4, 5), result.output
    return result.exit_code


class _SharedSession:
    """The engine of one model bytes, opened once: the fuzz targets the manifest reader,
    and opening an ONNX Runtime session per example (tens of ms) would be nearly all of
    the run time. Everything else (parse, schema, spec agreement, pipelines, the run) is
    the real code; close() is a no-op so the next example reuses the session."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def close(self):
        pass


@pytest.fixture
def shared_engines(monkeypatch):
    from edgepack.runtime import engines
    real, opened = engines.open_engine, {}

    def open_engine(name, model, **settings):
        key = (name, bytes(model), tuple(sorted(settings.items())))
        if key not in opened:
            opened[key] = _SharedSession(real(name, model, **settings))
        return opened[key]
    monkeypatch.setattr(engines, "open_engine", open_engine)
    yield
    for session in opened.values():
        session._engine.close()


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_manifest_quick(tmp_path, rich, shared_engines, data):
    manifest = _manifest(rich)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(_HypothesisChoices(data), manifest)
    _only_edgepack_errors(tmp_path, _with(rich, json.dumps(manifest).encode()))


FUZZ_EXAMPLES = 10_000


@pytest.mark.slow
def test_fuzz_manifest_many(tmp_path, rich, shared_engines):
    """10,000 seeded mutations; a failure names its example number to replay it. The tally
    shows the mutations reach past the schema: some bundles still verify, others fail in
    the pipeline or engine, not all at parse time."""
    outcomes: dict[int, int] = {}
    for example in range(FUZZ_EXAMPLES):
        choices = _SeededChoices(seed=example)
        manifest = _manifest(rich)
        for _ in range(1 + choices.index(3)):
            _mutate(choices, manifest)
        try:
            code = _only_edgepack_errors(tmp_path, _with(rich, json.dumps(manifest).encode()))
        except BaseException as error:
            raise AssertionError(f"seeded fuzz example {example}: {error!r}\n"
                                 f"{json.dumps(manifest)[:2000]}") from error
        outcomes[code] = outcomes.get(code, 0) + 1
    share = {code: count / FUZZ_EXAMPLES for code, count in outcomes.items()}
    assert share.get(0, 0) >= 0.10 and share.get(3, 0) >= 0.5, outcomes
    assert share.get(4, 0) + share.get(5, 0) >= 0.01, outcomes
