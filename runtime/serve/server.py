"""The model server: repository manager + metrics + a threaded HTTP/1.1 server.

Stack: the standard library's `ThreadingHTTPServer` (one thread per keep-alive connection).
It needs no dependency, so it installs on any Raspberry Pi OS (armv7 and aarch64) with the
runtime alone, and ONNX Runtime / LiteRT release the GIL while they compute, so handler
threads do run inferences in parallel on a multi-core board; a semaphore of `workers` bounds
how many do at once, and `max_connections` bounds the threads.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .config import ServeConfig
from .connections import ConnectionTable
from .errors import ServeError
from .handler import V2Handler, tensor_metadata
from .manager import LoadedVersion, Loader, ModelManager
from .metrics import Metrics
from .protocol import v2_datatype
from .repository import version_key

log = logging.getLogger(__name__)

_BUSY_BODY = b'{"error": "too many connections; retry in a moment please"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


#: Model metadata `platform`, as the Open Inference Protocol spec names them
#: ("<project>_<format>"; its list has onnx_onnxv1 for "an ONNX model encoded for ONNX
#: Runtime" and no TFLite entry, so LiteRT follows the same rule as tensorflow_tflite).
V2_PLATFORMS = {"onnxruntime": "onnx_onnxv1", "litert": "tensorflow_tflite"}
#: Triton's model configuration names ONNX Runtime models onnxruntime_onnx.
TRITON_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "litert": "tensorflow_tflite"}


def v2_platform(engine: str) -> str:
    """The V2 metadata platform name of an edgepack engine (an unknown engine: its name)."""
    return V2_PLATFORMS.get(engine, engine)


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent connections and quiet client errors."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: "ModelServer"):
        self.app = app
        self._slots = threading.BoundedSemaphore(app.config.max_connections)
        self.connections = ConnectionTable()
        # Per instance, read by TCPServer.__init__ when it creates the socket.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, V2Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Full: make room by dropping the connection that has waited longest without sending
        # a complete request head (a slow loris, or an idle keep-alive), then wait briefly for
        # its thread to give the slot back. Connections being served are never dropped.
        if not self._slots.acquire(blocking=False) and not (
                self.connections.drop_one_waiting() and self._slots.acquire(timeout=2.0)):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are routine on a device; not worth a traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class ModelServer:
    """Serve a bundle or a model repository over the Open Inference Protocol v2 REST API.

    `start()` loads what the version policy selects (raising `ServeError` if the path is
    unusable), starts the repository watcher and binds the socket; `serve_forever()` blocks;
    `stop()` shuts everything down. Also a context manager that serves in a background
    thread, which is what tests and embedding applications use.
    """

    def __init__(self, path: str | Path, config: ServeConfig | None = None,
                 loader: Loader | None = None):
        self.path = Path(path)
        self.config = config or ServeConfig()
        self.metrics = Metrics()
        self.manager = ModelManager(self.path, self.config, self.metrics, loader)
        self.workers = threading.BoundedSemaphore(self.config.workers)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise ServeError("the server is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> "ModelServer":
        """Load the initial versions, start watching, bind the socket (does not block)."""
        self.manager.sync(settle=False)
        loaded = self.manager.snapshot()
        if not any(loaded.values()):
            log.warning("no model version could be loaded from %s; serving anyway, new "
                        "versions are picked up as they appear", self.path)
        try:
            self._httpd = _HTTPServer((self.config.host, self.config.port), self)
        except OSError as exc:
            self.manager.close()
            raise ServeError(f"cannot listen on {self.config.host}:{self.config.port}: "
                             f"{exc.strerror or exc}; pick another --port or --host") from exc
        self.manager.start_watching()
        for model, versions in sorted(loaded.items()):
            log.info("serving %s versions %s", model,
                     ", ".join(sorted(versions, key=version_key)) or "(none)")
        return self

    def serve_forever(self) -> None:
        """Handle requests until `stop()` is called from another thread or a signal."""
        if self._httpd is None:
            self.start()
        httpd = self._httpd
        if httpd is not None:
            httpd.serve_forever(poll_interval=0.25)

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting connections and watching; let requests in flight finish (up to
        `drain_timeout` s; new ones on open connections get 503); release every model."""
        if self._httpd is not None:
            # Safe when serve_forever is not running: shutdown() then returns at once.
            self._httpd.shutdown()
            if self._thread is not None:
                self._thread.join(timeout=10)
                self._thread = None
            self._httpd.server_close()
            self._httpd = None
        self.manager.close(drain_timeout)

    def serve_in_background(self) -> "ModelServer":
        """Start (if needed) and handle requests in a daemon thread; `stop()` ends it."""
        if self._httpd is None:
            self.start()
        self._thread = threading.Thread(target=self.serve_forever, name="edgepack-serve-http",
                                        daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "ModelServer":
        return self.serve_in_background()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- metadata ------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        try:
            from importlib.metadata import version
            ours = version("edgepack")
        except Exception:  # not installed as a distribution (source tree): still answer
            ours = "0"
        return {"name": "edgepack", "version": ours,
                "extensions": ["binary_tensor_data", "classification", "model_repository",
                               "edgepack_pipeline"]}

    def model_config(self, lv: LoadedVersion) -> dict[str, Any]:
        """Triton-style model configuration (read by tritonclient's get_model_config and
        Triton tools such as perf_analyzer); batching is in the shapes, so max_batch_size 0."""
        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "data_type": "TYPE_" + ("STRING" if s.dtype == "string"
                                                             else v2_datatype(s.dtype)),
                     "dims": list(s.shape)} for s in specs]
        engine = getattr(lv.model, "engine_name", "unknown")
        return {"name": lv.model_name, "platform": TRITON_PLATFORMS.get(engine, engine),
                "backend": "edgepack", "max_batch_size": 0,
                "input": tensors(lv.model.inputs), "output": tensors(lv.model.outputs),
                "version_policy": self.config.policy_for(lv.model_name).describe()}

    def model_metadata(self, lv: LoadedVersion, all_versions: bool) -> dict[str, Any]:
        """V2 model metadata from the bundle specs (versions: all loaded ones)."""
        versions = sorted(self.manager.snapshot().get(lv.model_name, {}), key=version_key)
        model = lv.model
        return {
            "name": lv.model_name,
            "versions": versions if all_versions else [lv.version],
            "platform": v2_platform(getattr(model, "engine_name", "unknown")),
            "inputs": tensor_metadata(model.inputs),
            "outputs": tensor_metadata(model.outputs),
        }
