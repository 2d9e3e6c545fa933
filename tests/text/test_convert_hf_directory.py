"""`edgepack convert DIR` recognises a Hugging Face save_pretrained directory (config.json
+ weights) and takes the text path: tokenizer asset, encode/decode steps, dynamic int8 by
default; options that mean nothing for a transformer are refused by name (exit 2)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgepack.converters.hf_source import is_hf_directory

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, trained_json):
    js = trained_json("wordpiece")
    root = tmp_path_factory.mktemp("hfdir")
    config = transformers.BertConfig(vocab_size=len(json.loads(js)["model"]["vocab"]),
                                     hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(root / "encoder")
    (root / "encoder" / "tokenizer.json").write_text(js, encoding="utf-8")
    return root / "encoder"


def _cli(*args):
    from edgepack.cli.main import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_detection_needs_config_and_weights(encoder_dir, tmp_path):
    assert is_hf_directory(encoder_dir)
    (tmp_path / "config.json").write_text("{}")
    assert not is_hf_directory(tmp_path)          # config alone: not a saved model
    assert not is_hf_directory(encoder_dir / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert is_hf_directory(tmp_path)


def test_inapplicable_options_are_refused(encoder_dir, tmp_path):
    done = _cli("convert", encoder_dir, "-o", tmp_path / "x.edgepack", "--input-shape",
                "1,16", "--int8-io")
    assert done.exit_code == 2, done.output
    assert "is a Hugging Face model directory (text path); --input-shape, --int8-io do " \
           "not apply" in done.output
    done = _cli("convert", encoder_dir, "-o", tmp_path / "x.edgepack", "-t", "tflite")
    assert done.exit_code == 2 and "transformers convert to onnx only" in done.output


def test_library_load_source_points_at_the_text_path(encoder_dir):
    from edgepack.converters.sources import load_source
    from edgepack.runtime.errors import ConversionError
    with pytest.raises(ConversionError, match="save_pretrained directory: convert it with "
                                              "edgepack.converters.hf_onnx.convert_transformer"):
        load_source(str(encoder_dir))


@pytest.mark.slow
def test_convert_directory_takes_the_text_path(encoder_dir, tmp_path):
    from edgepack.runtime import load
    out = tmp_path / "embed.edgepack"
    done = _cli("convert", encoder_dir, "-o", out, "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output[done.output.index("{"):])
    assert result["task"] == "embed" and result["quantization"] == "dynamic"
    assert result["validation"]["passed"] is True
    with load(out) as model:
        assert model.manifest.assets == {"tokenizer": "tokenizer.json"}
        assert [s["op"] for s in model.manifest.encode] == ["tokenize"]
        vec = model.predict("a sentence to embed")["embedding"][0]
    assert len(vec) == 32 and abs(sum(v * v for v in vec) - 1.0) < 1e-4


def test_accuracy_target_is_for_static_int8_only(encoder_dir, tmp_path):
    for args in (("convert", encoder_dir), ("convert-transformer", encoder_dir)):
        done = _cli(*args, "-o", tmp_path / "x.edgepack", "--accuracy-target", "0.99")
        assert done.exit_code == 2, done.output
        assert "--accuracy-target is for static int8" in done.output
        assert not (tmp_path / "x.edgepack").exists()


def test_pass_steering_flags_are_refused_for_a_transformer_directory(encoder_dir, tmp_path):
    for flags in (("--max-float-layers", "0"), ("--reconstruct",)):
        done = _cli("convert", encoder_dir, "-o", tmp_path / "x.edgepack", "-q", "int8",
                    "--accuracy-target", "0.99", *flags)
        assert done.exit_code == 2, done.output
        assert f"{flags[0]} do not apply to it" in done.output
        assert not (tmp_path / "x.edgepack").exists()
