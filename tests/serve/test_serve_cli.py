"""`edgepack serve` as a user runs it, and the import-weight promise of the serve package."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from serve_fixtures import call

click = pytest.importorskip("click")
from click.testing import CliRunner  # noqa: E402

from edgepack.cli.main import cli  # noqa: E402
from edgepack.cli.serve_cmd import serve  # noqa: E402


def test_serve_runs_answers_and_stops_cleanly_on_sigterm(repo):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack.cli.main", "serve", str(repo), "--port", "0",
         "--poll", "0.1", "--workers", "2", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, lines, deadline = None, [], time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"at (http://\S+)/v2 ", line)
            url = match.group(1) if match else None
        assert url, f"no start-up line; stdout={lines} stderr={proc.stderr.read()[-2000:]}"
        assert "  adder: 2\n" in lines and "  color: 1\n" in lines
        status, _, body = call("GET", url + "/v2/models/adder/ready")
        assert status == 200 and json.loads(body)["version"] == "2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert "loaded adder version 2" in err       # INFO log of the load, on stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_bad_options_are_one_line_errors(repo):
    runner = CliRunner()
    result = runner.invoke(serve, [str(repo), "--versions", "latest:0"])
    assert result.exit_code == 2 and "N must be at least 1" in result.output
    result = runner.invoke(serve, [str(repo), "--max-body", "lots"])
    assert result.exit_code == 2 and "is not a size" in result.output
    # a click range now (issue 12 item 19): a usage error, exit 2
    result = runner.invoke(serve, [str(repo), "--workers", "0"])
    assert result.exit_code == 2 and "'--workers': 0 is not in the range x>=1" in result.output
    assert "Traceback" not in result.output


def test_port_in_use_is_a_clear_error(repo):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        # through the CLI group: ServeError's own exit code, 8 (issue 12 item 20)
        result = CliRunner().invoke(cli, ["serve", str(repo), "--port", str(port), "--poll", "0"])
    assert result.exit_code == 8
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_serve_package_stays_light():
    code = (
        "import sys\n"
        "import edgepack.runtime\n"
        "assert 'edgepack.runtime.serve' not in sys.modules, 'runtime imports serve'\n"
        "import edgepack.runtime.serve\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'click', 'PIL',"
        " 'tritonclient') if m in sys.modules]\n"
        "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_hostile_client_limits_reach_the_server_config(repo, monkeypatch):
    import edgepack.cli.serve_cmd as serve_cmd
    from edgepack.runtime.serve import ServeError

    seen = {}

    class Recorder:
        def __init__(self, path, config):
            seen["config"] = config
            raise ServeError("recorded; not starting")

    monkeypatch.setattr(serve_cmd, "ModelServer", Recorder)
    result = CliRunner().invoke(cli, ["serve", str(repo), "--poll", "0", "--header-timeout",
                                      "2.5", "--body-timeout", "7", "--max-image-pixels",
                                      "1000"])
    assert result.exit_code == 8 and "recorded; not starting" in result.output
    config = seen["config"]
    assert (config.header_timeout, config.body_timeout, config.max_image_pixels) == \
        (2.5, 7.0, 1000)
    result = CliRunner().invoke(serve, [str(repo), "--header-timeout", "0"])
    assert result.exit_code == 2 and "--header-timeout" in result.output
