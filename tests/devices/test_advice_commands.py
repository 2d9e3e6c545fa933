"""Every command line edgepack prints as advice parses with the command it names (issue 12
item 16: `check` advised `--quantization int8`, `devices show rpi4b` `--ram-mb`, neither
of which existed).

Two nets: the advice the device layer actually produces (check findings on every profile,
refusals of every target x mode, profile and engine notes) is collected and each backticked
`edgepack ...` command is parsed with click's `make_context`; and every `--option` named in
a message string anywhere in the library must be an option of some edgepack command.
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

from edgepack.cli.main import cli
from edgepack.devices import check_bundle, list_profiles, refuse_reason
from edgepack.devices.catalog import QUANTIZATIONS, TARGET_ENGINE

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"`(edgepack [^`]+)`")
OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])(?![\w-])")
#: Files whose strings are other programs' command lines (pip, apt), not edgepack advice.
FOREIGN = {"devices/emulation/environment.py", "devices/gen_tflite_limits.py"}
#: Options of other tools that notes quote ("tflite-runtime with pip --no-deps").
FOREIGN_OPTIONS = {"no-deps"}


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def all_options() -> set[str]:
    names = set()
    for _, command in all_commands():
        for param in command.params:
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("--"):
                    names.add(opt[2:])
    for param in cli.params:  # the group's own: --debug, --verbose, --version
        names.update(o[2:] for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names | {"help"} | FOREIGN_OPTIONS


def parse(line: str) -> click.Context:
    """Parse `edgepack SUB ... ARGS` as the CLI would (types, required, choices)."""
    words = shlex.split(line)
    assert words[0] == "edgepack", line
    command: click.Command = cli
    words = words[1:]
    while isinstance(command, click.Group):
        assert words and words[0] in command.commands, f"no command {words[:1]} in {line!r}"
        command, words = command.commands[words[0]], words[1:]
    return command.make_context(command.name, words)


@pytest.fixture
def advice(tmp_path, monkeypatch, conv_bundle, conv_tflite):
    """Every advice text the device layer gives on two bundles, every profile and combo."""
    from edgepack.runtime import pack_bundle
    tflite = pack_bundle(tmp_path / "t.edgepack", conv_tflite, name="t")
    texts = []
    for profile in list_profiles():
        texts += [profile.notes, *(e.notes for e in profile.engines)]
        for bundle in (conv_bundle, tflite):
            for finding in check_bundle(bundle, profile).findings:
                texts += [finding.message, finding.fix or ""]
        for target in TARGET_ENGINE:
            for mode in QUANTIZATIONS:
                texts.append(refuse_reason(profile, target, mode) or "")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DATA").write_bytes(b"")  # the placeholder for the user's calibration data
    return [t for t in texts if t]


def test_advised_commands_parse(advice):
    commands = {m for text in advice for m in COMMAND.findall(text)}
    assert any("-q int8" in c for c in commands)  # the int8 advice is among them
    for line in sorted(commands):
        context = parse(line)
        assert context.command.name in ("convert", "check", "devices", "show"), line


def test_advice_names_only_existing_options(advice):
    known = all_options()
    named = {o for text in advice for o in OPTION.findall(text)}
    assert "ram-mb" in named  # the rpi4b note
    assert sorted(named - known) == []


def test_a_wrong_option_fails_to_parse():
    with pytest.raises(click.UsageError, match="No such option.*--quantization"):
        parse("edgepack convert MODEL -o M.edgepack --quantization int8")


def message_strings(path: Path):
    """String constants of a module, docstrings excluded (f-strings' literal parts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def scanned_modules() -> list[Path]:
    """The converters, the sdk and the device layer's advice (areas still being written by
    others, such as MQTT and deploy, add their commands later: extend this list then)."""
    paths = [*(ROOT / "converters").rglob("*.py"), *(ROOT / "sdk").rglob("*.py")]
    paths += [ROOT / "devices" / name for name in
              ("check.py", "advice.py", "catalog.py", "emulation/run.py")]
    from edgepack.cli.main import COMMAND_MODULES
    registered = {name.rsplit(".", 1)[1] for name in COMMAND_MODULES}

    def wanted(path: Path) -> bool:
        rel = path.relative_to(ROOT).as_posix()
        # a command module not yet registered defines options the CLI does not know yet
        unregistered = (rel.startswith("sdk/cli/") and path.stem.endswith(("_cmd", "_cmds"))
                        and path.stem not in registered)
        return rel not in FOREIGN and not unregistered
    return sorted(p for p in paths if wanted(p))


def test_every_option_in_a_library_message_exists():
    known = all_options()
    unknown = []
    for path in scanned_modules():
        rel = path.relative_to(ROOT).as_posix()
        for line, text in message_strings(path):
            unknown += [f"{rel}:{line} --{o}" for o in OPTION.findall(text) if o not in known]
    for toml in sorted((ROOT / "devices" / "profiles").glob("*.toml")):
        unknown += [f"{toml.name} --{o}" for o in OPTION.findall(toml.read_text())
                    if o not in known]
    assert unknown == []


def test_check_ram_mb_changes_the_budget(conv_bundle):
    from click.testing import CliRunner
    small = CliRunner().invoke(cli, ["check", str(conv_bundle), "-d", "rpi4b", "--ram-mb",
                                     "1024", "--json"])
    assert small.exit_code == 0, small.output
    import json
    budget = json.loads(small.output)["estimates"]["ram_budget_mb"]
    default = json.loads(CliRunner().invoke(cli, ["check", str(conv_bundle), "-d", "rpi4b",
                                                  "--json"]).output)["estimates"]
    assert default["ram_budget_mb"] - budget == 4096 - 1024
