"""On-device model serving over the Open Inference Protocol (KServe V2) REST API.

Not imported by `import edgepack.runtime`: an application that only runs models never pays
for the HTTP layer. Standard library + numpy only (Pillow, when installed, decodes images for
the pipeline route).

    from edgepack.runtime.serve import ModelServer, ServeConfig
    with ModelServer("models/", ServeConfig(port=8000)) as server:
        ...   # serving in a background thread at server.url

`edgepack serve PATH` is the command-line front end.
"""
from __future__ import annotations

from .config import ServeConfig, VersionPolicy
from .errors import RequestError, ServeError
from .server import ModelServer

__all__ = ["ModelServer", "ServeConfig", "VersionPolicy", "ServeError", "RequestError"]
