"""Keep the CLI's stderr to edgepack's own lines: native libraries' log lines are dropped.

TensorFlow, absl and LiteRT's C++ code write straight to file descriptor 2 ("INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.", "W0000 00:00:... cpu_feature_guard...", "WARNING:
All log messages before absl::InitializeLog() ..."), below Python's sys.stderr, so neither
logging nor warnings filters reach them. While a command runs, fd 2 is a pipe; a thread
copies every line to the real stderr except those of known native loggers. `--verbose`
(or --debug) leaves stderr untouched. Only the installed `edgepack` command does this; the
library and click's test runner never touch file descriptors.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

#: Lines of native loggers: glog/absl ("I0000 00:00:1700000000.1 123 file.cc:12] ..." or
#: "W1201 11:13:51.504000 10519 file.py:107] ..."), TFLite ("INFO: Created TensorFlow Lite
#: XNNPACK delegate"), absl's pre-init notice, and TF's oneDNN/CPU-feature banners.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    rb"|INFO: Created TensorFlow Lite \w+ delegate"
    rb"|INFO: Initialized TensorFlow Lite runtime"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    rb"|\S*oneDNN custom operations are on)")
#: Python-level warnings the frameworks print on every run, with nothing for the user to do.
NOISY_WARNINGS = (r".*tf\.lite\.Interpreter is deprecated.*",)


def quiet_python_logs() -> None:
    """Framework loggers to ERROR and their recurring deprecation warnings off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("absl", "tensorflow", "h5py", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class NativeLogFilter:
    """fd 2 through a filtering pipe for the duration of a `with` block."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "NativeLogFilter":
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
        except OSError:  # no usable fd 2 (some service managers): leave stderr alone
            self._saved = None
            return self
        self._thread = threading.Thread(target=self._copy, args=(read_end, self._saved),
                                        name="edgepack-stderr-filter", daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _copy(read_end: int, out: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while True:
                chunk = source.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not NATIVE_LINE.match(line):
                        os.write(out, line + b"\n")
            if pending and not NATIVE_LINE.match(pending):
                os.write(out, pending)

    def __exit__(self, *exc) -> None:
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last writer of ours: the thread sees EOF
        if self._thread is not None:
            self._thread.join(timeout=2.0)  # bounded: a leftover child may hold the pipe
        os.close(self._saved)
        self._saved = None
