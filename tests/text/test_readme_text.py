"""Every command and snippet of the README's text section, run as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Text: tokenizer in the bundle"


def _blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + 1)
    return re.findall(rf"```{lang}\n(.*?)```", text[start:end], re.S)


@pytest.fixture
def models_dir(tmp_path, trained_json):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    js = trained_json("wordpiece")
    import json
    vocab = len(json.loads(js)["model"]["vocab"])
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64, num_labels=3,
                                     id2label={0: "lights", 1: "music", 2: "time"},
                                     label2id={"lights": 0, "music": 1, "time": 2})
    torch.manual_seed(0)
    for name, cls in (("intent-model", transformers.BertForSequenceClassification),
                      ("encoder", transformers.BertModel)):
        cls(config).save_pretrained(tmp_path / name)
        (tmp_path / name / "tokenizer.json").write_text(js, encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_readme_text_section_runs(models_dir):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    outputs = []
    for block in _blocks("bash"):
        for line in block.strip().splitlines():
            done = subprocess.run(line, shell=True, cwd=models_dir, env=env, text=True,
                                  capture_output=True, timeout=600)
            assert done.returncode == 0, (line, done.stderr[-2000:])
            outputs.append(done.stdout)
    assert "turn on the kitchen lights: labels:" in outputs[1]
    import json
    lines = json.loads(outputs[2])
    assert [r["text"] for r in lines] == ["wie spät ist es?", "play some jazz"]
    assert {d["label"] for d in lines[0]["labels"]} == {"lights", "music", "time"}
    vec = json.loads(outputs[4])[0]["embedding"]
    assert len(vec) == 32 and abs(sum(v * v for v in vec) - 1.0) < 1e-4
    for snippet in _blocks("python"):
        scope: dict = {}
        cwd = os.getcwd()
        os.chdir(models_dir)
        try:
            exec(compile(snippet, "README.md", "exec"), scope)
        finally:
            os.chdir(cwd)
        assert len(scope["vectors"]) == 2 and scope["labels"][0]["label"] in ("lights", "music",
                                                                               "time")
