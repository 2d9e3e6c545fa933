"""HTTP request handler: routes of the Open Inference Protocol v2 REST API.

One handler thread per connection (HTTP/1.1 keep-alive); inference itself is bounded by the
server's worker semaphore. Every refusal is a JSON ``{"error": "..."}`` with a 4xx status and
the connection stays usable, except after a body that could not be read, where the server
closes the connection because the stream position is lost.
"""
from __future__ import annotations

import io
import logging
import re
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .connections import Connection, DeadlineReader
from .errors import RequestError
from .inference import PIPELINE_PARAMETER, jsonable_results, predict, run_pipeline, run_raw
from .inference import decode_file
from .sequences import is_sequence_request, sequences_for
from .protocol import (decode_infer_request, encode_infer_response, error_body, json_bytes,
                       parse_header_length, v2_datatype)

if TYPE_CHECKING:
    from .server import ModelServer

log = logging.getLogger(__name__)

_MODEL_ROUTE = re.compile(
    r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"(?P<action>/ready|/infer|/predict|/config)?/?$")
#: Content types accepted by /infer: JSON, the binary extension's (clients differ; tritonclient
#: sends none at all), and the form type curl -d and urllib send when none is given, because
#: refusing it would fail the most common first try with curl for no safety gain.
_INFER_TYPES = {"", "application/json", "application/octet-stream",
                "application/vnd.sagemaker-triton.binary+json",
                "application/x-www-form-urlencoded"}
#: A rejected body up to this size is read and discarded so the client sees the 413 instead of
#: a reset connection; a larger one is not read at all.
_DRAIN_LIMIT = 8 * 1024 * 1024


class V2Handler(BaseHTTPRequestHandler):
    """Serves one connection; `self.server.app` is the owning `ModelServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "edgepack-serve"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per request on Linux, measured by benchmarks/serve.py).
    disable_nagle_algorithm = True
    # Buffered writes: status line, headers and body leave in one send() instead of two.
    # One syscall less per response; no difference above noise measured on a busy 2-core box.
    wbufsize = 64 * 1024
    app: "ModelServer"

    # A request line the stdlib cannot parse is answered as HTTP/1.0, with a status line:
    # the stdlib default (HTTP/0.9) would send the JSON error body alone.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.app = self.server.app  # type: ignore[attr-defined]
        config = self.app.config
        self.timeout = config.keepalive_timeout
        super().setup()
        # Reads end at the deadline of the connection's phase (idle, head, body), however
        # slowly a client trickles bytes; see connections.py.
        self._conn = Connection(self.connection, config.keepalive_timeout,
                                config.header_timeout)
        self.rfile.close()
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self._conn),
                                       self.rbufsize if self.rbufsize > 0 else 65536)
        self.server.connections.add(self._conn)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.connections.remove(self._conn)  # type: ignore[attr-defined]
        try:
            super().finish()
        except OSError:     # the client (or a drop to make room) closed the socket first
            pass

    def handle_one_request(self) -> None:
        self._conn.wait_for_request()
        if self._conn.dropped:
            self.close_connection = True
            return
        super().handle_one_request()

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors the stdlib raises itself (bad request line, too many headers, unsupported
        method, URI too long) answer in JSON like every other error, not in HTML."""
        self.close_connection = True
        if code == 501:     # the stdlib's "Unsupported method": a method this server lacks
            code, message, explain = 405, (f"method {self.command} not allowed; this server "
                                           "answers GET, HEAD and POST"), None
        text = message or self.responses.get(code, ("error",))[0]
        text += f": {explain}" if explain else ""
        if len(text) > 300:     # the stdlib quotes the client's request line: keep it short
            text = text[:297] + "..."
        body = error_body(text)
        self.app.metrics.inc("edgepack_http_requests_total", (("code", str(code)),))
        self.connection.settimeout(self.app.config.body_timeout)
        # The standard reason phrase only: the stdlib's message echoes client bytes, which
        # do not belong in a status line.
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code == 405:
            self.send_header("Allow", "GET, HEAD, POST")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # --- dispatch ------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # Methods no route takes still get a JSON 405 (404 for an unknown path), and their body
    # is taken off the stream so the keep-alive connection stays usable.
    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        self._conn.serving(self.app.config.body_timeout)
        self._status = 500
        self._consumed = False      # request body read (or discarded) yet?
        self._counted = False       # edgepack_http_requests_total incremented yet?
        try:
            self._route(method, urlsplit(self.path).path)
        except RequestError as exc:
            self._fail(exc.status, exc.message)
        except Exception:  # a bug must cost one request, not the server
            log.exception("unhandled error serving %s %s", method, self.path)
            self._fail(500, "internal server error; see the server log")
        finally:
            self._count_status()   # when nothing was sent (e.g. the client went away)

    def _count_status(self) -> None:
        if self._counted:   # once per request: the status that went out first
            return
        self._counted = True
        self.app.metrics.inc("edgepack_http_requests_total", (("code", str(self._status)),))

    def _route(self, method: str, path: str) -> None:
        if path in ("/v2/health/live", "/v2/health/ready", "/v2", "/metrics",
                    "/v2/repository/index"):
            if path == "/v2/repository/index":
                self._require(method, "GET", "POST")
                self._drain_body()
                self._json(200, [{"name": r.model, "version": r.version, "state": r.state,
                                  "reason": r.reason} for r in self.app.manager.index()])
                return
            self._require(method, "GET", "HEAD")
            if path == "/v2/health/live":
                self._json(200, {"live": True})
            elif path == "/v2/health/ready":
                ready = self.app.manager.ready()
                self._json(200 if ready else 503, {"ready": ready})
            elif path == "/v2":
                self._json(200, self.app.server_metadata())
            else:
                self._send(200, self.app.metrics.render().encode("utf-8"),
                           "text/plain; version=0.0.4; charset=utf-8")
            return
        match = _MODEL_ROUTE.match(path)
        if match is None:
            raise RequestError(404, f"no route {path!r}; see /v2 and the Open Inference "
                                    "Protocol REST paths")
        model = unquote(match["model"])
        version = unquote(match["version"]) if match["version"] else None
        action = match["action"] or ""
        if action in ("/infer", "/predict"):
            self._require(method, "POST")
            if action == "/infer":
                self._infer(model, version)
            else:
                self._predict(model, version)
            return
        self._require(method, "GET", "HEAD")
        with self.app.manager.lease(model, version) as lv:
            if action == "/ready":
                self._json(200, {"name": model, "version": lv.version, "ready": True})
            elif action == "/config":
                self._json(200, self.app.model_config(lv))
            else:
                self._json(200, self.app.model_metadata(lv, version is None))

    def _require(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise RequestError(405, f"method {method} not allowed here; use "
                                    f"{' or '.join(allowed)}")

    # --- inference -----------------------------------------------------------------------
    def _infer(self, model: str, version: str | None) -> None:
        ctype = self._content_type()
        if ctype not in _INFER_TYPES:
            self._drain_body()
            raise RequestError(415, f"content type {ctype!r} is not supported by /infer; send "
                                    "application/json (or the binary tensor extension)")
        body = self._read_body()
        with self._metered_lease(model, version) as lv:
            header_length = parse_header_length(
                self.headers.get("Inference-Header-Content-Length"), len(body))
            request = decode_infer_request(body, header_length)
            del body
            with self.app.workers:
                if request.parameters.get(PIPELINE_PARAMETER):
                    outputs = run_pipeline(lv.model, request,
                                           self.app.config.max_image_pixels)
                elif is_sequence_request(request):  # Triton sequence parameters: state kept here
                    outputs = sequences_for(self.app).run(lv.model_name, lv.version, lv.model,
                                                          request)
                else:
                    outputs = run_raw(lv.model, request)
            out, out_header = encode_infer_response(lv.model_name, lv.version, request.id,
                                                    outputs)
        headers = {}
        ctype_out = "application/json"
        if out_header is not None:
            headers["Inference-Header-Content-Length"] = str(out_header)
            ctype_out = "application/octet-stream"
        self._send(200, out, ctype_out, headers)

    def _predict(self, model: str, version: str | None) -> None:
        """edgepack route: the body is one file (image or .npy), or text for a bundle that
        tokenizes (JSON string / list / {"text": ...}, or text/plain); answers the
        postprocessed result as JSON."""
        ctype = self._content_type()
        is_text = ctype in ("application/json", "text/plain")
        if not (is_text or ctype in ("", "application/octet-stream", "application/x-npy")
                or ctype.startswith("image/")):
            self._drain_body()
            raise RequestError(415, f"content type {ctype!r} is not supported by /predict; "
                                    "send image/* or application/octet-stream bytes, or "
                                    "application/json / text/plain to a text bundle")
        body = self._read_body()
        with self._metered_lease(model, version) as lv:
            inputs = lv.model.inputs
            encodes = bool(getattr(getattr(lv.model, "manifest", None), "encode", ()))
            if encodes:
                raw = _text_body(body, ctype)
            elif is_text:
                raise RequestError(415, f"model {model!r} takes an image or .npy file, not "
                                        f"{ctype} (only bundles with a tokenizer take text)")
            elif len(inputs) != 1:
                raise RequestError(400, f"/predict takes one file but model {model!r} has "
                                        f"{len(inputs)} inputs; use /infer with "
                                        f"parameters.{PIPELINE_PARAMETER}")
            else:
                raw = decode_file(body, inputs[0].name, self.app.config.max_image_pixels)
            with self.app.workers:
                result = predict(lv.model, {inputs[0].name: raw})
            payload = {"model_name": lv.model_name, "model_version": lv.version,
                       "outputs": jsonable_results(result)}
        self._json(200, payload)

    @contextmanager
    def _metered_lease(self, model: str, version: str | None):
        """Lease a model version for one request and meter it.

        A failure inside counts against that version (or the model, before a lease); a
        success is counted after the lease ends and before the caller replies, so a client
        that reads /metrics right after its response finds the request there.
        """
        start = time.perf_counter()
        labels = None
        try:
            with self.app.manager.lease(model, version) as lv:
                labels = lv.labels      # errors from here on count against this version
                yield lv
        except RequestError as exc:
            self._count_error(model, labels, exc.status)
            raise
        except Exception:
            self._count_error(model, labels, 500)
            raise
        self.app.metrics.inc("edgepack_requests_total", labels)
        self.app.metrics.observe(labels, time.perf_counter() - start)

    def _count_error(self, model: str, labels: Any, status: int) -> None:
        # Unknown model names are not used as label values: a client could grow the metrics
        # without bound by inventing names.
        if labels is None:
            if model not in self.app.manager.snapshot():
                return
            labels = (("model", model), ("version", ""))
        self.app.metrics.inc("edgepack_request_errors_total", labels + (("code", str(status)),))

    # --- bodies --------------------------------------------------------------------------
    def _content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "chunked request bodies are not supported; send "
                                    "Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {raw!r}")
        return length

    def _drain_body(self) -> None:
        """Read and drop a body we refuse, keeping the connection in a known state."""
        self._consumed = True
        length = self._content_length()
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            try:
                chunk = self.rfile.read1(min(length, 65536))
            except (TimeoutError, OSError):
                chunk = b""
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _receive(self, length: int) -> bytes:
        """Exactly `length` body bytes, or a 400 when the body ends early or stalls past the
        body deadline (ServeConfig.body_timeout)."""
        parts, got = [], 0
        while got < length:
            try:
                chunk = self.rfile.read1(min(length - got, 1 << 20))
            except TimeoutError:
                self.close_connection = True
                raise RequestError(400, f"body ended after {got} of {length} bytes: the rest "
                                        f"did not arrive within {self.app.config.body_timeout:g}"
                                        " s (Content-Length larger than the body?)") from None
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _read_body(self) -> bytes:
        self._consumed = True
        length = self._content_length()
        limit = self.app.config.max_body_bytes
        if length > limit:
            self._drain_body()
            self.close_connection = True
            raise RequestError(413, f"request body of {length} bytes is over the limit of "
                                    f"{limit} bytes (edgepack serve --max-body)")
        body = self._receive(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestError(400, f"body ended after {len(body)} of {length} bytes")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise RequestError(415, f"content encoding {encoding!r} is not supported; use gzip, "
                                    "deflate or none")
        # Bounded inflate: a small compressed body must not expand past the body limit.
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise RequestError(400, f"body is not valid {encoding} data: {exc}") from None
        if len(data) > limit or inflater.unconsumed_tail:
            raise RequestError(413, f"decompressed body is over the limit of {limit} bytes")
        return data

    # --- responses -----------------------------------------------------------------------
    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json_bytes(payload), "application/json")

    def _fail(self, status: int, message: str) -> None:
        if not self._consumed:
            # A refusal before the body was read (wrong route or method) must still take the
            # body off the stream, or the next request on this connection would start in it.
            try:
                self._drain_body()
            except RequestError:
                self.close_connection = True
        if status >= 500:
            log.error("answering %d to %s %s: %s", status, self.command, self.path, message)
        self._send(status, error_body(message), "application/json")

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self._status = status
        # Counted before a byte goes out: a client that reads this response and then
        # scrapes /metrics must find it there.
        self._count_status()
        # A client that reads its answer slowly gets as long as a slow body, no longer.
        self.connection.settimeout(self.app.config.body_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


def tensor_metadata(specs: Any) -> list[dict[str, Any]]:
    """V2 tensor metadata (name, datatype, shape; -1 = dynamic) from TensorSpecs."""
    return [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)}
            for s in specs]


def _text_body(body: bytes, ctype: str):
    """The request body of a text bundle's /predict, or a 400 naming what was wrong."""
    from ..errors import InputError
    from ..text.steps import parse_text_body
    try:
        return parse_text_body(body, ctype)
    except InputError as exc:
        raise RequestError(400, str(exc)) from None
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
