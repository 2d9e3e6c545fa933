"""`edgepack optimize prune|distill|qat`: pruning, distillation and QAT from files.

Models come as `package.module:factory` (plus a `.pt` state_dict), data as an `.npz` with
x_train, y_train and optionally x_test, y_test. The output is a state_dict that
`edgepack convert` reads (and, with --export, a torch.export `.pt2` file).
torch is imported only when a command runs, so `edgepack --help` stays light.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgepack.runtime.errors import InputError


def _load_npz(path: str, need_train: bool = True) -> dict:
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read data file {path}: {e}") from e
    if need_train:
        missing = [k for k in ("x_train", "y_train") if k not in arrays]
        if missing:
            raise InputError(
                f"{path} lacks {', '.join(missing)}; it has {', '.join(arrays) or 'nothing'} "
                "(expected x_train, y_train and optionally x_test, y_test)")
    return arrays


def _split(arrays: dict, prefix: str):
    x, y = arrays.get(f"x_{prefix}"), arrays.get(f"y_{prefix}")
    return (x, y) if x is not None and y is not None else None


def _model(spec: str, weights: str | None):
    from edgepack.converters import optimize

    from .workdir import import_from_working_directory
    import_from_working_directory()
    model = optimize.build_model(spec)
    if weights:
        optimize.load_weights(model, weights)
    return model


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def _example(arrays: dict | None, input_shape: str | None):
    import torch
    if input_shape:
        try:
            shape = [int(d) for d in input_shape.split(",")]
        except ValueError:
            raise InputError(
                f"--input-shape must be comma-separated integers like 1,1,32,32, got "
                f"{input_shape!r}") from None
        return torch.zeros(shape)
    if arrays is None:
        raise InputError("structured pruning needs --data or --input-shape to "
                         "trace tensor shapes")
    return torch.as_tensor(arrays["x_train"][:2]).float()


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key != "history":
            click.echo(f"{key}: {value}")


def _training_options(epochs_min: int, epochs_default: int, epochs_help: str | None = None):
    """The optimizer options prune (fine-tuning), distill and qat share, in one place so
    their names, ranges and defaults cannot drift apart."""
    options = [
        click.option("--epochs", type=click.IntRange(min=epochs_min), default=epochs_default,
                     show_default=True, help=epochs_help),
        click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3,
                     show_default=True),
        click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]),
                     default="adam", show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=64,
                     show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


@click.group("optimize")
def optimize_group() -> None:
    """Prune or distill a PyTorch model before `edgepack convert`."""


@optimize_group.command("prune")
@click.argument("model_spec")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="state_dict (.pt) to load into the factory's model.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the pruned state_dict (.pt).")
@click.option("--method", type=click.Choice(["structured", "magnitude"]),
              default="structured", show_default=True)
@click.option("--amount", type=float, default=0.5, show_default=True,
              help="Fraction removed, in [0, 1): channels (structured) or weights (magnitude).")
@click.option("--norm", type=click.Choice(["l1", "l2"]), default="l1", show_default=True)
@click.option("--scope", type=click.Choice(["global", "layer"]), default="global",
              show_default=True, help="Magnitude pruning: rank weights globally or per layer.")
@click.option("--layers", help="Comma-separated layers to prune (structured; default: all "
              "that can be).")
@click.option("--exclude", help="Comma-separated layers to leave as they are.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False),
              help=".npz with x_train, y_train[, x_test, y_test] for tracing and fine-tuning.")
@click.option("--input-shape", help="Example input shape, e.g. 1,1,32,32 (instead of --data).")
@_training_options(0, 0, "Fine-tune epochs after pruning (needs --data).")
@click.option("--export", "export", type=click.Path(dir_okay=False),
              help="Also write a torch.export program (.pt2) `edgepack convert` takes as is.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def prune_cmd(model_spec, weights, out, method, amount, norm, scope, layers, exclude, data,
              input_shape, epochs, lr, optimizer, batch_size, seed, export, as_json):
    """Prune MODEL_SPEC (package.module:factory) and write its weights to --out."""
    _prune(model_spec, weights, out, method, amount, norm, scope, layers, exclude, data,
           input_shape, epochs, lr, optimizer, batch_size, seed, export, as_json)


def _prune(model_spec, weights, out, method, amount, norm, scope, layers, exclude, data,
           input_shape, epochs, lr, optimizer, batch_size, seed, export, as_json):
    from edgepack.converters import optimize

    if epochs and not data:
        raise InputError("--epochs needs --data with x_train and y_train")
    # every option is checked before the model is built or any data read
    if method == "structured":
        config = optimize.StructuredPruneConfig(
            amount=amount, norm=norm, layers=_names(layers), exclude=_names(exclude) or ())
    else:
        if layers:
            raise InputError("--layers is for structured pruning; magnitude pruning "
                             "takes --exclude")
        config = optimize.MagnitudePruneConfig(sparsity=amount, scope=scope,
                                               exclude=_names(exclude) or ())
    train_config = optimize.TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer,
                                        batch_size=batch_size, seed=seed) if epochs else None
    arrays = _load_npz(data) if data else None
    model = _model(model_spec, weights)
    summary: dict = {"method": method, "params_before": optimize.count_parameters(model)}
    test = _split(arrays, "test") if arrays else None
    if test is not None:
        summary["accuracy_before"] = optimize.evaluate(model, test)[1]
    if method == "structured":
        result = optimize.prune_structured(model, _example(arrays, input_shape), config)
        summary["pruned"] = {c.name: f"{c.before}->{c.after}" for c in result.pruned}
        if result.skipped:
            summary["skipped"] = result.skipped
        masks = None
    else:
        result = optimize.prune_magnitude(model, config)
        summary["sparsity"] = round(result.report.fraction, 4)
        summary["layers"] = {s.name: round(s.fraction, 4) for s in result.report.layers}
        masks = result.masks
    if train_config is not None:
        tuned = optimize.fine_tune(model, _split(arrays, "train"), train_config,
                                   eval_data=test, masks=masks)
        summary["history"] = tuned.history.to_dict()
    summary["params_after"] = optimize.count_parameters(model)
    if test is not None:
        summary["accuracy_after"] = optimize.evaluate(model, test)[1]
    summary["weights"] = str(optimize.save_weights(model, out))
    if export:
        summary["exported"] = str(_export(model, _example(arrays, input_shape), export))
    _emit(summary, as_json)


def _export(model, example, path: str) -> Path:
    import torch
    model.eval()
    # Batch axis dynamic so the bundle accepts any batch; the example needs a batch of 2,
    # since torch.export specializes a dimension of size 1 to a constant.
    example = torch.cat([example[:1], example[:1]])
    try:
        program = torch.export.export(model, (example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, path)
    except Exception as e:  # torch.export raises many types
        from edgepack.converters.optimize.errors import OptimizeError
        raise OptimizeError(f"torch.export of the optimized model failed: "
                            f"{str(e).splitlines()[0]}") from e
    return Path(path)


@optimize_group.command("distill")
@click.option("--teacher", "teacher_spec", required=True, help="package.module:factory")
@click.option("--teacher-weights", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--student", "student_spec", required=True, help="package.module:factory")
@click.option("--student-weights", type=click.Path(exists=True, dir_okay=False),
              help="Initial student weights (default: the factory's initialization).")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".npz with x_train, y_train[, x_test, y_test].")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the student's state_dict (.pt).")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=4.0,
              show_default=True)
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="Weight of the teacher (soft) term; 1-alpha weighs the labels.")
@_training_options(1, 10)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def distill_cmd(teacher_spec, teacher_weights, student_spec, student_weights, data, out,
                temperature, alpha, epochs, lr, optimizer, batch_size, seed, as_json):
    """Distill the teacher into the student on --data and write the student's weights."""
    from edgepack.converters import optimize

    config = optimize.DistillConfig(
        temperature=temperature, alpha=alpha, epochs=epochs, lr=lr, optimizer=optimizer,
        batch_size=batch_size, seed=seed)
    arrays = _load_npz(data)
    teacher = _model(teacher_spec, teacher_weights)
    student = _model(student_spec, student_weights)
    test = _split(arrays, "test")
    result = optimize.distill(teacher, student, _split(arrays, "train"), config,
                              eval_data=test)
    summary = {"teacher_params": optimize.count_parameters(teacher),
               "student_params": optimize.count_parameters(student),
               "final_loss": round(result.history.final.loss, 5)}
    if test is not None:
        summary["teacher_accuracy"] = optimize.evaluate(teacher, test)[1]
        summary["student_accuracy"] = optimize.evaluate(student, test)[1]
    summary["weights"] = str(optimize.save_weights(student, out))
    summary["history"] = result.history.to_dict()
    _emit(summary, as_json)


@optimize_group.command("qat")
@click.argument("model_spec")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="state_dict (.pt) to load into the factory's model.")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".npz with x_train, y_train, x_test, y_test (the test split validates "
                   "the bundle).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Where to write the int8 bundle.")
@click.option("--device", help="Device profile whose int8 recipe to train for "
                               "(default: this machine).")
@_training_options(1, 3)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256,
              show_default=True, help="Training inputs that set the activation ranges.")
@click.option("--fixed-ranges", is_flag=True,
              help="Do not learn ReLU clipping bounds (ranges stay the measured min/max).")
@click.option("--distill", "distill_alpha", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True,
              help="Weight of the float model's soft outputs in the loss (1: ignore the "
                   "labels and train the int8 model to behave like the float one).")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=2.0,
              show_default=True, help="Softmax temperature of --distill.")
@click.option("--float-outputs", is_flag=True,
              help="The last layer writes the output in float, not 8 bits (in training "
                   "and in the bundle).")
@click.option("--accept", is_flag=True,
              help="Keep a bundle that does not reproduce the fake-quant model.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def qat_cmd(model_spec, weights, data, out, device, epochs, lr, optimizer, batch_size, seed,
            calibration_samples, fixed_ranges, distill_alpha, temperature, float_outputs,
            accept, as_json):
    """Quantization-aware training of MODEL_SPEC, exported to an int8 bundle at --out."""
    from edgepack import optimize

    config = optimize.QATConfig(epochs=epochs, lr=lr, optimizer=optimizer,
                                batch_size=batch_size, seed=seed, device=device,
                                learn_ranges=not fixed_ranges,
                                calibration_samples=calibration_samples,
                                distill_alpha=distill_alpha, temperature=temperature,
                                float_outputs=float_outputs)
    arrays = _load_npz(data)
    test = _split(arrays, "test")
    if test is None:
        raise InputError(f"{data} lacks x_test, y_test: QAT validates the int8 bundle on a "
                         "held-out split that calibration never sees")
    model = _model(model_spec, weights)
    result = optimize.quantization_aware(model, _split(arrays, "train"), config)
    converted = result.export(out, validation_data=test[0], validation_labels=test[1],
                              accept=accept)
    task = converted.validation.get("task") or {}
    summary = {"float_accuracy": optimize.evaluate(model, test)[1],
               "qat_accuracy": optimize.evaluate(result.model, test)[1],
               "bundle_accuracy": task.get("bundle"),
               "recipe": result.recipe.name,
               "bundle": str(converted.path),
               "history": result.history.to_dict()}
    from edgepack.runtime import read_bundle
    summary["fake_quant_match"] = read_bundle(converted.path).manifest.quantization["qat"][
        "fake_quant_match"]
    _emit(summary, as_json)


def register(cli: click.Group) -> None:
    """Add the `optimize` group to the top-level `edgepack` CLI."""
    cli.add_command(optimize_group)
