"""Property tests: whatever bytes arrive, the reader raises only edgepack's own errors."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.runtime import BundleLimits, read_bundle
from edgepack.runtime.errors import EdgepackError

LIMITS = BundleLimits(max_member_bytes=1 << 20, max_total_bytes=2 << 20)
FUZZ = settings(max_examples=150, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def good(conv_bundle) -> bytes:
    return conv_bundle.read_bytes()


def _read(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.edgepack"
    path.write_bytes(data)
    try:
        read_bundle(path, limits=LIMITS)
    except EdgepackError:
        pass  # the only acceptable failure


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(tmp_path, data):
    _read(tmp_path, data)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_archives(tmp_path, good, cut):
    _read(tmp_path, good[: cut % len(good)])


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips(tmp_path, good, flips):
    data = bytearray(good)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    _read(tmp_path, bytes(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@FUZZ
@given(path=st.lists(st.sampled_from(["model", "inputs", 0, "shape", "dtype", "files", "model.onnx",
                                      "quantization", "scale", "preprocess", "x", "labels",
                                      "outputs", "name", "sha256", "bytes", "schema_version"]),
                     min_size=1, max_size=4),
       value=json_values)
def test_mutated_manifests(tmp_path, good, path, value):
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    manifest = json.loads(members["manifest.json"])
    node = manifest
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    elif isinstance(node, list) and node and isinstance(last, int):
        node[last % len(node)] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    _read(tmp_path, buffer.getvalue())
