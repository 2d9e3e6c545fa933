"""Reading limits (issue 12 item 7), checksums of every member kind (item 34), and how bundles
are written: file mode from the umask, no temp file left on SIGINT/SIGTERM (item 8)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from edgepack.runtime import BundleLimits, pack_bundle, read_bundle
from edgepack.runtime.errors import (BundleTooLargeError, ChecksumError, UnlistedMemberError)

EDGEPACK = Path(sys.executable).with_name("edgepack")
# The figure: 1 GiB inflated. EDGEPACK_BOMB_MIB makes it smaller to show the failure of
# an unfixed reader without pushing a shared machine into swap.
BOMB_MIB = int(os.environ.get("EDGEPACK_BOMB_MIB", "1024"))
RSS_LIMIT_MB = 100


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


class _RepeatedDeflate:
    """Stands in for zipfile's zlib compressor when the same 1 MiB chunk is written again and
    again: the chunk is deflated once, ended with a full flush (byte-aligned, history reset),
    so every repetition's compressed bytes are the same and are simply written again. The
    stream is valid deflate; zipfile still computes the CRC and sizes of what is written."""

    def __init__(self, chunk: bytes):
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        self._chunk = chunk
        self._block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)

    def compress(self, data: bytes) -> bytes:
        assert data == self._chunk
        return self._block

    def flush(self) -> bytes:
        return zlib.compressobj(1, zlib.DEFLATED, -15).flush()   # an empty final block


def _write_bomb(path: Path, members: dict[str, bytes], bomb_name: str, *, pattern: bytes,
                mib: int, manifest_edit=None) -> Path:
    """A zip whose `bomb_name` inflates to `mib` MiB of `pattern`, streamed through zipfile so
    the test never holds it; with `manifest_edit`, the manifest lists it with its true sha256."""
    chunk = (pattern * ((1 << 20) // len(pattern) + 1))[:1 << 20]
    digest = hashlib.sha256()
    with zipfile.ZipFile(path, "w", compresslevel=1) as z:
        info = zipfile.ZipInfo(bomb_name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as out:
            out._compressor = _RepeatedDeflate(chunk)   # deflating 1 GiB took ~10-25 s
            for _ in range(mib):
                out.write(chunk)
                digest.update(chunk)
        if manifest_edit is not None:
            manifest = json.loads(members["manifest.json"])
            manifest_edit(manifest, digest.hexdigest(), mib << 20)
            members = {**members, "manifest.json": json.dumps(manifest).encode()}
        for name, data in members.items():
            if name != bomb_name:
                z.writestr(name, data)
    return path


# Linux counts a forked child's peak RSS from before its exec (the parent's pages, here the whole
# pytest process), so the command is started from a small launcher and measured with wait4 there.
_LAUNCH = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
           "_, status, usage = os.wait4(p.pid, 0)\n"
           "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def _peak_rss_mb(argv: list[str]) -> tuple[int, str, float]:
    """Run argv; return (exit code, stderr, its peak RSS in MB: an upper bound, as it includes
    the small launcher's own pages)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCH, *argv], capture_output=True,
                          text=True, timeout=300)
    code, kib = done.stdout.split()
    return int(code), done.stderr, int(kib) / 1024   # ru_maxrss is KiB on Linux


def _label_bomb(manifest, sha, size):
    manifest["files"]["labels.txt"] = {"sha256": sha, "bytes": size}


@pytest.mark.parametrize("bomb, pattern, edit", [
    ("labels.txt", b"cat\n", _label_bomb),       # correct sha256 and size in the manifest
    ("manifest.json", b" ", None),                # a manifest that is one huge JSON blank
])
def test_verify_of_a_deflate_bomb_stays_small(tmp_path, conv_bundle, bomb, pattern, edit):
    path = _write_bomb(tmp_path / "bomb.edgepack", _members(conv_bundle), bomb,
                       pattern=pattern, mib=BOMB_MIB, manifest_edit=edit)
    assert path.stat().st_size < 8 << 20          # a few MB on disk
    code, stderr, peak = _peak_rss_mb([str(EDGEPACK), "verify", str(path)])
    assert code == 3, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert bomb in stderr
    assert peak < RSS_LIMIT_MB, f"verify peaked at {peak:.0f} MB: {stderr}"


def test_compression_ratio_is_capped_before_inflating(tmp_path, conv_bundle):
    path = _write_bomb(tmp_path / "b.edgepack", _members(conv_bundle), "labels.txt",
                       pattern=b"\0", mib=64, manifest_edit=_label_bomb)
    started = time.perf_counter()
    with pytest.raises(BundleTooLargeError, match="'labels.txt'.*compression ratio"):
        read_bundle(path)
    # Refused from the zip header, not after inflating 64 MiB (a generous bound: no timing race)
    assert time.perf_counter() - started < 5


def test_small_compressed_members_are_fine(tmp_path, conv_bundle):
    members = _members(conv_bundle)
    with zipfile.ZipFile(tmp_path / "d.edgepack", "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert read_bundle(tmp_path / "d.edgepack").labels() == ["cat", "dog", "bird", "fish"]


def test_unlisted_member_is_refused_without_reading_it(tmp_path, conv_bundle):
    path = _write_bomb(tmp_path / "u.edgepack", _members(conv_bundle), "extra.bin",
                       pattern=b"\0", mib=16)
    with pytest.raises(UnlistedMemberError, match="extra.bin"):
        read_bundle(path, limits=BundleLimits(max_compression_ratio=10**6))


def test_header_size_must_match_the_manifest(tmp_path, conv_bundle):
    members = _members(conv_bundle)
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["labels.txt"]["bytes"] = 3   # the zip says 18
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "s.edgepack", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ChecksumError, match="'labels.txt' is 18 bytes, manifest says 3"):
        read_bundle(tmp_path / "s.edgepack")


def test_total_and_manifest_limits(tmp_path, conv_bundle):
    size = conv_bundle.stat().st_size
    with pytest.raises(BundleTooLargeError, match="add up to more than"):
        read_bundle(conv_bundle, limits=BundleLimits(max_total_bytes=size // 2))
    with pytest.raises(BundleTooLargeError, match="manifest.json"):
        read_bundle(conv_bundle, limits=BundleLimits(max_manifest_bytes=100))


def test_directory_bundle_limits(tmp_path, conv_onnx):
    path = pack_bundle(tmp_path / "d", conv_onnx, name="d", labels=["a", "b", "c", "d"],
                       directory=True)
    with pytest.raises(BundleTooLargeError, match="add up to more than"):
        read_bundle(path, limits=BundleLimits(max_total_bytes=len(conv_onnx) // 2))
    (path / "stray.bin").write_bytes(b"x")
    with pytest.raises(UnlistedMemberError, match="stray.bin"):
        read_bundle(path)


# --- item 34: the sha256 check covers every member kind ----------------------------------------
@pytest.mark.parametrize("directory", [False, True])
@pytest.mark.parametrize("member", ["model.onnx", "labels.txt", "assets/tokenizer"])
def test_every_member_kind_is_checksummed(tmp_path, conv_onnx, directory, member):
    path = pack_bundle(tmp_path / "b", conv_onnx, name="b", labels=["a", "b", "c", "d"],
                       assets={"tokenizer": b'{"vocab": {"a": 0, "b": 1}}'}, directory=directory)
    assert member in read_bundle(path).members
    if directory:
        target = path / member
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x20          # same size, one bit flipped
        target.write_bytes(bytes(data))
    else:
        members = _members(path)
        data = bytearray(members[member])
        data[len(data) // 2] ^= 0x20
        members[member] = bytes(data)
        with zipfile.ZipFile(path, "w") as z:
            for name, value in members.items():
                z.writestr(name, value)
    with pytest.raises(ChecksumError, match=f"member '{member}' sha256"):
        read_bundle(path)


# --- item 8: modes and temp files ---------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("directory", [False, True])
def test_written_bundles_honour_the_umask(tmp_path, conv_onnx, umask, mode, directory):
    old = os.umask(umask)
    try:
        path = pack_bundle(tmp_path / "m", conv_onnx, name="m", labels=["a", "b", "c", "d"],
                           directory=directory)
    finally:
        os.umask(old)
    files = [p for p in path.rglob("*") if p.is_file()] if directory else [path]
    assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}


_INTERRUPTIBLE_SIGN = textwrap.dedent("""
    import sys, time, zipfile
    real = zipfile.ZipFile.writestr
    def writestr_then_wait(self, *args, **kwargs):
        real(self, *args, **kwargs)
        print("writing", flush=True)
        time.sleep(120)   # the parent signals here: mid-write, the temp file exists
    zipfile.ZipFile.writestr = writestr_then_wait
    from edgepack.cli.main import cli
    cli(["sign", sys.argv[1], "--key", sys.argv[2]], prog_name="edgepack")
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_sign_leaves_no_temp_file(tmp_path, conv_onnx, signum):
    pytest.importorskip("cryptography")
    from edgepack.runtime.signing import write_keypair
    folder = tmp_path / "out"
    folder.mkdir()
    bundle = pack_bundle(folder / "b.edgepack", conv_onnx, name="b")
    before = bundle.read_bytes()
    key, _, _ = write_keypair(tmp_path / "k")
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTIBLE_SIGN, str(bundle), str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()    # returns at "writing", or "" if the child died
        assert line == "writing\n", proc.stderr.read()
        assert [p.name for p in folder.iterdir() if p.name.startswith(".edgepack-")]
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM   # still dies by the signal, after cleaning up
    assert sorted(p.name for p in folder.iterdir()) == ["b.edgepack"]
    assert bundle.read_bytes() == before


def test_directory_write_interrupted_leaves_no_temp_file(tmp_path, conv_onnx, monkeypatch):
    from edgepack.runtime import bundle as bundle_module
    path = pack_bundle(tmp_path / "d", conv_onnx, name="d", directory=True)
    calls = []
    real_replace = os.replace

    def interrupted_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", interrupted_replace)
    b = read_bundle(path)
    with pytest.raises(KeyboardInterrupt):
        bundle_module.write_bundle(path, b.manifest, {n: b.read(n) for n in b.members},
                                   directory=True)
    assert not [p for p in path.rglob("*") if ".tmp" in p.name or p.name.startswith(".edgepack-")]
