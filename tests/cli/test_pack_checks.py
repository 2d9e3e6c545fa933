"""`pack` and `verify` refuse a pipeline that cannot produce the model's input and labels
that do not match the class dimension (issue 12 item 18: 3-channel 224x224 preprocessing on
a [?,1,8,8] model passed `verify`, and 2 labels for 10 classes were accepted)."""
from __future__ import annotations

from pathlib import Path

from cli_helpers import invoke

from edgepack.runtime import pack_bundle

IMAGE = ("--scale", "0.0039", "--layout", "HWC:NCHW")


def test_pack_refuses_a_pipeline_of_the_wrong_size(cli_files):
    result = invoke("pack", "m.onnx", "-o", "a.edgepack", "--resize", "224,224", *IMAGE)
    assert result.exit_code == 4, result.output
    assert ("the preprocessing of input 'x' cannot produce the model's input: on a synthetic "
            "RGB image of shape [37, 41, 3] it fails (input 'x': expected shape [?, 3, 8, 8], "
            "got [1, 3, 224, 224])") in result.output
    assert not Path("a.edgepack").exists()


def test_pack_refuses_the_wrong_channel_count(cli_files):
    result = invoke("pack", "m.onnx", "-o", "g.edgepack", "--resize", "8,8", "--color", "GRAY",
                    *IMAGE)
    assert result.exit_code == 4 and "got [1, 1, 8, 8]" in result.output, result.output


def test_a_matching_pipeline_packs_and_verify_says_it_was_checked(cli_files):
    assert invoke("pack", "m.onnx", "-o", "ok.edgepack", "--resize", "8,8", *IMAGE).exit_code == 0
    result = invoke("verify", "ok.edgepack")
    assert result.exit_code == 0, result.output
    assert "pipeline x: preprocessing turns a RGB image into [?, 3, 8, 8] float32" in result.output


def test_verify_refuses_a_bundle_written_without_the_check(cli_files, conv_onnx):
    pack_bundle("bad.edgepack", conv_onnx, name="bad",
                preprocess={"x": [{"op": "resize", "size": [224, 224]},
                                  {"op": "layout", "from": "HWC", "to": "NCHW"}]})
    result = invoke("verify", "bad.edgepack")
    assert result.exit_code == 4 and "cannot produce the model's input" in result.output


def test_label_count_must_match_the_classes(cli_files, conv_onnx):
    Path("two.txt").write_text("a\nb\n")
    result = invoke("pack", "m.onnx", "-o", "l.edgepack", "--labels", "two.txt")
    assert result.exit_code == 2, result.output
    assert "two.txt: 2 labels, but the model's outputs have 4 classes (logits [?, 4])" \
        in result.output
    Path("four.txt").write_text("a\nb\nc\nd\n")
    assert invoke("pack", "m.onnx", "-o", "l.edgepack", "--labels", "four.txt").exit_code == 0
    pack_bundle("l2.edgepack", conv_onnx, name="l2", labels=["a", "b"])
    assert invoke("verify", "l2.edgepack").exit_code == 2


def test_convert_refuses_labels_of_the_wrong_count(cli_files):
    Path("two.txt").write_text("a\nb\n")
    result = invoke("convert", "m.onnx", "-o", "c.edgepack", "--labels", "two.txt")
    assert result.exit_code == 2, result.output
    assert "--labels: 2 labels, but the model's outputs have 4 classes" in result.output
    assert not Path("c.edgepack").exists()
