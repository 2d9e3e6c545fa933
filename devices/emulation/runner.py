"""Run a bundle once with edgepack.runtime and save its raw outputs (host and guest alike).

Executed as a script, by the host Python for the reference run and by the emulated ARM
Python for the device run, so both go through the very same code path:

    python runner.py BUNDLE INPUTS.npz OUTPUTS.npz THREADS

It imports nothing but numpy and edgepack.runtime (the guest has nothing else). The
outputs file also records the engine module that ran (`__engine__`).
"""
import sys
import time


def main(argv):
    import numpy as np

    from edgepack.runtime import load

    bundle, inputs_path, outputs_path, threads = argv[1], argv[2], argv[3], int(argv[4])
    with np.load(inputs_path) as data:
        feeds = {name: data[name] for name in data.files}
    start = time.perf_counter()
    with load(bundle, threads=threads) as model:
        outputs = model.run(feeds)
        engine = model.engine_name
    seconds = time.perf_counter() - start
    for module in ("ai_edge_litert", "tflite_runtime", "onnxruntime", "tensorflow"):
        if module in sys.modules:
            version = getattr(sys.modules[module], "__version__", "?")
            engine = f"{engine} ({module} {version})"
            break
    extra = {"__engine__": np.array(engine), "__seconds__": np.array(seconds),
             "__numpy__": np.array(np.__version__)}
    np.savez(outputs_path, **{k: np.asarray(v) for k, v in outputs.items()}, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
