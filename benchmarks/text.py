"""Text on the device: tokenizer speed, its share of an inference, dynamic int8 (issue 15).

    python benchmarks/text.py                    # everything (~5 min on 2 shared cores)
    python benchmarks/text.py --only tokenize    # pure-Python vs HF tokenizers, batch 1
    python benchmarks/text.py --only model       # MiniLM-sized encoder: share, int8 vs fp32

Tokenization: WordPiece, byte-level BPE and Unigram tokenizers trained here with HF
`tokenizers` on the fortunes corpora (tests/text/trained.py); 1,000 sentences per language
encoded one at a time (batch 1) by both, interleaved in blocks of 50, medians per sentence,
in process CPU time (both encode on the calling thread; CPU time is what a loaded 2-core
host distorts least: wall-clock ratios here swung 1x-10x between runs). Goal: pure
Python <= 1.5x HF.
Model: a MiniLM-sized BERT (6 layers, hidden 384, 12 heads, vocab 30522, random init: speed
does not depend on the weights) exported as edgepack does (dynamo, dynamic axes), run by
onnxruntime on a batch-1, 128-token input. Share: the pure-Python time to tokenize one
fortune (WordPiece, English) over one fp32 inference at 1 thread; goal <= 0.5%. int8:
dynamic-int8 latency over fp32 at 1 and 2 threads, timed interleaved; goal <= 0.5 at 1.
Timings on a shared machine are noisy: every ratio uses an anchor measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgepack.runtime.benchmark import cpu_description, time_interleaved  # noqa: E402
from tests.text import corpus, trained  # noqa: E402


def tokenize_bench(n: int = 1000) -> dict:
    from tokenizers import Tokenizer as HF

    from edgepack.runtime.text import Tokenizer
    print(f"{'model':10} {'lang':4} {'HF us':>8} {'pure us':>8} {'ratio':>6}")
    ratios, per_sentence = [], {}
    for kind in ("wordpiece", "bpe", "unigram"):
        js = trained.trained(kind)
        hf, ours = HF.from_str(js), Tokenizer.from_json(js)
        for lang in corpus.PACKAGES:
            texts = corpus.sample(lang, n, seed=5)
            for t in texts[:200]:  # warm both caches alike
                hf.encode(t)
                ours.encode(t)
            chunks = [texts[i:i + 50] for i in range(0, len(texts), 50)]
            it_hf, it_ours = iter(chunks * 3), iter(chunks * 3)
            times = time_interleaved(
                [lambda: [hf.encode(t) for t in next(it_hf)],
                 lambda: [ours.encode(t) for t in next(it_ours)]], rounds=len(chunks),
                clock=time.process_time)
            h = statistics.median(times[0]) / 50 * 1e6
            o = statistics.median(times[1]) / 50 * 1e6
            ratios.append(o / h)
            per_sentence[(kind, lang)] = o
            print(f"{kind:10} {lang:4} {h:8.1f} {o:8.1f} {o / h:6.2f}")
    print(f"pure/HF ratio: median {statistics.median(ratios):.2f}, range "
          f"{min(ratios):.2f}-{max(ratios):.2f} (goal <= 1.5)")
    return per_sentence


def model_bench(per_sentence: dict | None) -> None:
    import torch
    import transformers

    from edgepack.converters.config import QuantizationConfig
    from edgepack.converters.hf_onnx import export_transformer
    from edgepack.converters.hf_source import HFSource
    from edgepack.converters.quantize_onnx import quantize_onnx
    from edgepack.runtime.engines import open_engine
    from edgepack.runtime.text import Tokenizer
    config = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                     num_attention_heads=12, intermediate_size=1536,
                                     attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    src = HFSource(model, "embed", None, ("input_ids", "attention_mask", "token_type_ids"),
                   "tokenizer.json", b"", transformers.__version__)
    t = time.perf_counter()
    fp32 = export_transformer(src)
    print(f"export: {time.perf_counter() - t:.1f} s, {len(fp32) / 1e6:.1f} MB")
    dyn = quantize_onnx(fp32, QuantizationConfig(mode="dynamic", speed_check=False)).model_bytes
    print(f"dynamic int8: {len(dyn) / 1e6:.1f} MB")
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 30522, (1, 128)).astype(np.int64),
             "attention_mask": np.ones((1, 128), np.int64),
             "token_type_ids": np.zeros((1, 128), np.int64)}
    results = {}
    one = open_engine("onnxruntime", fp32, threads=1)
    one.run(feeds)
    cpu = []
    for _ in range(10):  # 1 thread runs on the calling thread: CPU time is comparable
        start = time.process_time()
        one.run(feeds)
        cpu.append(time.process_time() - start)
    one.close()
    fp32_cpu_ms = statistics.median(cpu) * 1e3
    for threads in (1, 2):
        a = open_engine("onnxruntime", fp32, threads=threads)
        b = open_engine("onnxruntime", dyn, threads=threads)
        times = time_interleaved([lambda: a.run(feeds), lambda: b.run(feeds)], rounds=15,
                                 block=3, warmup=3)
        f, d = statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3
        results[threads] = f
        print(f"{threads} thread(s): fp32 {f:.1f} ms, dynamic int8 {d:.1f} ms, ratio "
              f"{d / f:.2f} (goal <= 0.5 at 1 thread)")
        a.close()
        b.close()
    js = trained.trained("wordpiece")
    tok = Tokenizer.from_json(js)
    texts = corpus.sample("en", 1000, seed=5)
    for t in texts[:200]:
        tok.encode(t)
    start = time.process_time()
    for t in texts:
        tok.encode(t)
    us = (time.process_time() - start) / len(texts) * 1e6
    print(f"tokenization share of one fp32 inference (1 thread, CPU time): {us:.0f} us / "
          f"{fp32_cpu_ms:.1f} ms = {us / 1e3 / fp32_cpu_ms * 100:.2f}% (goal <= 0.5%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tokenize", "model"])
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    print(cpu_description())
    print("(shared machine: expect +-30% between runs; ratios are measured in one run)")
    per = None
    if args.only in (None, "tokenize"):
        per = tokenize_bench(args.sentences)
    if args.only in (None, "model"):
        model_bench(per)


if __name__ == "__main__":
    main()
