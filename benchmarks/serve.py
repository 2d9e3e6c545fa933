"""Serving throughput and latency vs in-process predict, on a small model.

    .venv/bin/python benchmarks/serve.py [--duration 3] [--clients 1,4,16] [--threads 1]
                                         [--hidden 256] [--compare-asgi]
                                         [--workers N] [--spin-wait default|yes|no]
    .venv/bin/python benchmarks/serve.py --swaps 11 [--swap-mb 28]

Builds a small MLP bundle (64 -> 256 -> 256 -> 10, fixed seed), measures the in-process
`Model.run` rate in one thread, then starts `edgepack serve` in a subprocess (as on a device)
and drives it from keep-alive HTTP clients on 127.0.0.1 for each concurrency level, with JSON
tensors and with the binary tensor extension. Prints requests/s, p50/p99 latency and the
ratio of served to in-process rate. With --compare-asgi the same request path (same codec,
same `run_raw`) also runs as a bare ASGI app under uvicorn (pure-Python h11, and httptools),
to put a number on the choice of HTTP stack. Clients run as threads in this process, so at high
concurrency they compete with the server for the same cores: the ratio is a lower bound of
what a remote client would see.

With --swaps N it measures memory instead: a server subprocess holds one model of --swap-mb MB
that is replaced in place N times while requests run on it, and the server's RSS is printed
after each swap, with `release_memory` (malloc_trim after each unload, the default) and
without it, so the two columns come from the same run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def build_bundle(repo: Path, hidden: int = 256) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.runtime import pack_bundle

    rng = np.random.default_rng(0)
    sizes = [64, hidden, hidden, 10]
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w = numpy_helper.from_array((rng.normal(size=(n_in, n_out)) / np.sqrt(n_in))
                                    .astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")
        inits += [w, b]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["logits"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = repo / "mlp" / "1.edgepack"
    path.parent.mkdir(parents=True)
    return pack_bundle(path, model.SerializeToString(), name="mlp", version="1")


def in_process_rate(bundle: Path, threads: int, duration: float) -> tuple[float, float]:
    from edgepack.runtime import load

    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    with load(bundle, threads=threads) as model:
        for _ in range(50):
            model.run({"x": x})
        times = []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            model.run({"x": x})
            times.append(time.perf_counter() - t0)
    return len(times) / sum(times), float(np.median(times))


def _bodies(binary: bool) -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    if not binary:
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        return body, {"Content-Type": "application/json"}
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}


def drive(port: int, clients: int, duration: float, binary: bool) -> dict[str, float]:
    body, headers = _bodies(binary)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0]
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(20):                                   # warm-up, keep-alive open
            conn.request("POST", "/v2/models/mlp/infer", body, headers)
            conn.getresponse().read()
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            conn.request("POST", "/v2/models/mlp/infer", body, headers)
            resp = conn.getresponse()
            resp.read()
            latencies[i].append(time.perf_counter() - t0)
            if resp.status != 200:
                failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start_gate.wait()
    began = time.perf_counter()
    stop_at[0] = began + duration
    for t in threads:
        t.join(timeout=duration + 60)
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per])
    return {"clients": clients, "binary": binary, "requests": int(flat.size),
            "failures": failures[0], "rps": flat.size / elapsed,
            "p50_ms": float(np.percentile(flat, 50) * 1e3),
            "p99_ms": float(np.percentile(flat, 99) * 1e3)}


def _swap_model(mb: float, seed: int) -> tuple[bytes, int]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = max(1, int(mb * 1024 * 1024 / 4 / 256))
    weights = np.random.default_rng(seed).normal(size=(rows, 256)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])],
        [numpy_helper.from_array(weights, "w")])
    model = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), rows


def _install_swap(repo: Path, mb: float, seed: int) -> int:
    from edgepack.runtime import pack_bundle

    data, rows = _swap_model(mb, seed)
    staging = repo / "big" / ".1.tmp"
    staging.parent.mkdir(parents=True, exist_ok=True)
    pack_bundle(staging, data, name="big", version="1")
    os.replace(staging, repo / "big" / "1.edgepack")
    return rows


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def swap_child(repo: str, port: int, release: bool) -> None:
    """The server side of --swaps: serve `repo` in this process until killed."""
    from edgepack.runtime.serve import ModelServer, ServeConfig

    config = ServeConfig(host="127.0.0.1", port=port, workers=2, poll_interval=0.05,
                         engine_threads=2, max_body_bytes=256 * 1024 * 1024,
                         release_memory=release)
    with ModelServer(repo, config):
        while True:
            time.sleep(3600)


def measure_swaps(swaps: int, mb: float, release: bool) -> list[float]:
    """RSS (MB) of a server subprocess before and after each of `swaps` hot swaps."""
    import socket

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        rows = _install_swap(repo, mb, 0)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, __file__, "--swap-child", str(repo), "--asgi-port", str(port),
             "--swap-release", "yes" if release else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        x = np.ones((1, rows), np.float32)
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, rows], "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]}).encode()

        def version() -> float:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/v2/models/big/infer", head + x.tobytes(),
                             {"Inference-Header-Content-Length": str(len(head))})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise SystemExit(f"inference failed: {resp.status} {body[:200]!r}")
                return json.loads(body)["outputs"][0]["data"][0]   # differs per swap
            finally:
                conn.close()

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    version()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:]}")
                    time.sleep(0.1)
            for _ in range(3):
                version()
            rss = [_rss_mb(proc.pid)]
            for seed in range(1, swaps + 1):
                before = version()
                _install_swap(repo, mb, seed)
                deadline = time.monotonic() + 60
                while version() == before:           # new weights: the answer changes
                    if time.monotonic() > deadline:
                        raise SystemExit(f"swap {seed} was not picked up in 60 s")
                    time.sleep(0.05)
                for _ in range(3):
                    version()
                time.sleep(0.2)
                rss.append(_rss_mb(proc.pid))
            return rss
        finally:
            proc.kill()
            proc.wait(timeout=30)


def print_swaps(swaps: int, mb: float) -> None:
    with_trim = measure_swaps(swaps, mb, True)
    without = measure_swaps(swaps, mb, False)
    from edgepack.runtime.benchmark import cpu_description
    print(f"RSS of the server across {swaps} hot swaps of a {mb:g} MB model "
          f"({cpu_description()}; other processes share the machine)")
    print(f"{'swap':>4} {'release_memory MB':>18} {'without MB':>11}")
    for i, (a, b) in enumerate(zip(with_trim, without)):
        print(f"{i:>4} {a:>18.0f} {b:>11.0f}")
    print(f"growth after {swaps} swaps: {with_trim[-1] - with_trim[0]:+.0f} MB with "
          f"release_memory, {without[-1] - without[0]:+.0f} MB without; peak "
          f"{max(with_trim):.0f} vs {max(without):.0f} MB")


def start_server(repo: Path, workers: int, threads: int,
                 spin: str = "default") -> tuple[subprocess.Popen, int]:
    spin_flag = {"default": [], "yes": ["--spin-wait"], "no": ["--no-spin-wait"]}[spin]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack.cli.main", "serve", str(repo), "--port", "0",
         "--poll", "0", "--workers", str(workers), "--threads", str(threads), "--quiet",
         *spin_flag],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # --quiet keeps stderr small, so the unread pipe cannot fill and block the server.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"http://[^:]+:(\d+)/v2", line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise SystemExit(f"edgepack serve did not start: {proc.stderr.read()[-2000:]}")


def asgi_app(bundle: Path, threads: int):
    """The same /infer path (same codec, same run_raw) as a bare ASGI app, for comparison.

    Inference goes to a thread pool as an ASGI framework does for blocking work, so the
    event loop keeps accepting requests.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from edgepack.runtime import load
    from edgepack.runtime.serve.inference import run_raw
    from edgepack.runtime.serve.protocol import (decode_infer_request, encode_infer_response,
                                                 parse_header_length)

    model = load(bundle, threads=threads)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        raw = headers.get(b"inference-header-content-length")
        request = decode_infer_request(
            body, parse_header_length(raw.decode() if raw else None, len(body)))
        outputs = await asyncio.get_running_loop().run_in_executor(pool, run_raw, model, request)
        out, head = encode_infer_response("mlp", "1", request.id, outputs)
        response_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]
        if head is not None:
            response_headers.append((b"inference-header-content-length", str(head).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": out})

    return app


def start_asgi(repo: Path, http_impl: str, threads: int) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as probe:          # a free port (benchmark only: a tiny race is fine)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--asgi-child", str(repo / "mlp" / "1.edgepack"),
         "--asgi-port", str(port), "--asgi-http", http_impl, "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"uvicorn did not start: {proc.stderr.read()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--threads", type=int, default=1, help="engine intra-op threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--spin-wait", choices=["default", "yes", "no"], default="default",
                        help="engine workers spin between runs (serve's --spin-wait)")
    parser.add_argument("--hidden", type=int, default=256, help="MLP hidden width")
    parser.add_argument("--compare-asgi", action="store_true",
                        help="also run the same path under uvicorn (h11 and httptools)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--asgi-child", help=argparse.SUPPRESS)
    parser.add_argument("--asgi-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--asgi-http", help=argparse.SUPPRESS)
    parser.add_argument("--swaps", type=int, default=0,
                        help="measure server RSS across this many hot swaps instead")
    parser.add_argument("--swap-mb", type=float, default=28.0, help="model size for --swaps")
    parser.add_argument("--swap-child", help=argparse.SUPPRESS)
    parser.add_argument("--swap-release", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.swap_child:
        swap_child(args.swap_child, args.asgi_port, args.swap_release == "yes")
        return
    if args.swaps:
        print_swaps(args.swaps, args.swap_mb)
        return
    if args.asgi_child:
        import uvicorn

        uvicorn.run(asgi_app(Path(args.asgi_child), args.threads), host="127.0.0.1",
                    port=args.asgi_port, http=args.asgi_http, log_level="warning",
                    access_log=False)
        return
    levels = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        bundle = build_bundle(repo, args.hidden)
        rate, p50 = in_process_rate(bundle, args.threads, args.duration)
        stacks = [("stdlib", lambda: start_server(repo, args.workers, args.threads,
                                                  args.spin_wait))]
        if args.compare_asgi:
            from importlib.util import find_spec

            for impl in ("h11", "httptools"):
                if find_spec("uvicorn") is None or find_spec(impl) is None:
                    print(f"skipping uvicorn-{impl}: pip install uvicorn {impl}")
                    continue
                stacks.append((f"uvicorn-{impl}",
                               lambda impl=impl: start_asgi(repo, impl, args.threads)))
        rows = []
        for stack, start in stacks:
            proc, port = start()
            try:
                for binary in (False, True):
                    for c in levels:
                        rows.append({"stack": stack, **drive(port, c, args.duration, binary)})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps({"in_process_rps": rate, "in_process_p50_ms": p50 * 1e3,
                          "served": rows}, indent=2))
        return
    print(f"machine: {os.cpu_count()} cores, workers={args.workers}, "
          f"engine threads={args.threads}, MLP 64-{args.hidden}-{args.hidden}-10, "
          f"{args.duration:g} s per row")
    print(f"in-process Model.run: {rate:,.0f} /s, p50 {p50 * 1e3:.3f} ms")
    print(f"{'stack':17} {'encoding':8} {'clients':>7} {'req/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'fail':>5} {'served/in-process':>18}")
    for row in rows:
        print(f"{row['stack']:17} {'binary' if row['binary'] else 'json':8} {row['clients']:>7} "
              f"{row['rps']:>9,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['failures']:>5} {row['rps'] / rate:>18.3f}")


if __name__ == "__main__":
    main()
