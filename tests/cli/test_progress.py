"""Long steps show progress on stderr (issue 12 item 31): a spinner with the elapsed time on
a terminal, one line per step otherwise; convert reports loading the source too; the
quickstart lets convert's warnings through instead of capturing them."""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

from cli_helpers import invoke

from edgepack.cli.progress import StageProgress

ROOT = Path(__file__).resolve().parents[2]


def test_spinner_on_a_terminal():
    stream = io.StringIO()
    progress = StageProgress(stream, tty=True)
    progress.start("convert")
    time.sleep(0.5)
    progress.start("validate")
    progress.close()
    text = stream.getvalue()
    assert re.search(r"\rconvert \.\.\. [|/\-\\] 0s", text)
    assert re.search(r"convert: 0\.[4-9] s\n", text) and re.search(r"validate: \d\.\d s\n", text)


def test_one_line_per_step_elsewhere():
    stream = io.StringIO()
    progress = StageProgress(stream, tty=False)
    for name in ("load", "convert", "validate"):
        progress.start(name)
    progress.close()
    assert stream.getvalue() == "load ...\nconvert ...\nvalidate ...\n"


def test_convert_reports_each_stage(cli_files):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.endswith(" ...")]
    assert lines[1:] == ["load ...", "convert ...", "validate ..."]


def test_quickstart_does_not_capture_stderr():
    text = (ROOT / "examples" / "quickstart.py").read_text()
    assert "capture_output=True" not in text and "stdout=subprocess.PIPE" in text


def test_setup_announces_each_install_phase():
    lines = (ROOT / ".ci" / "setup").read_text().splitlines()
    for i, line in enumerate(lines):
        if "pip install" in line and not line.lstrip().startswith("#"):
            assert lines[i - 1].startswith('echo "setup: '), line  # a line before each phase
