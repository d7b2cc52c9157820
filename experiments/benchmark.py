"""Speed benchmark: JAX train steps against the same step in plain PyTorch.

    python experiments/benchmark.py [--models=lenet,resnet] [--shapes=supervised,fixmatch]
        [--repeats=20] [--no_torch] [--out=experiments/results/benchmark/cpu.json]

For each model and batch shape it times, in one process:
  jax_compute   forward + backward + SGD (Nesterov) update of the network on a
                fixed batch: the work PyTorch does below, nothing else
  jax_step      the trainer's whole step for that method (on-device sampling,
                augmentation, forward, backward, update, EMA) on MNIST, as the
                config ships and in the variants of speed.FULL_STEP_VARIANTS
                (FixMatch: fixmatch.weak_pass=no_grad and separate; every
                shape: pipeline=tfdata, fed by the tf.data pipeline, with the
                median wait for each batch and the ratio to the device's step)
  torch_compute the jax_compute step written in PyTorch (same architecture,
                batch, loss and optimizer), when torch is installed
The calls of one model and shape take turns (one timing each per round), so
that a slow spell of a shared machine falls on all of them alike. Compile
time (first call), the median of `repeats` timed calls in ms and
images/s (every image that goes through the network) are printed and saved
as JSON with the JAX/PyTorch ratio. torch is a benchmark-only extra
(`pip install -e ".[bench]"`), never needed to train.

With --time_to_accuracy=configs/default.py it also trains that config from
scratch (every stage, evaluating the EMA model on the test set every
--eval_every steps) and reports the wall time at which the test accuracy
first reached --target (default 0.99), less the time spent in those
evaluations, and the final accuracy. The test
labels only time the run here; nothing is chosen by them.
--time_to_accuracy_of=FOLDER reads the same figures back from the runs of an
experiments/run_seeds.py folder, one per label draw, on their own (coarser)
evaluation grid.

Shapes: supervised = 64 labeled images; fixmatch = 64 labeled + 2 x 448
unlabeled views (mu = 7), the shape USB times at 0.79 s per step on 2 cores;
fixmatch_rgb32 = the same on 60,000 random 32x32x3 images (whole steps only);
default = 16 labeled + 128 unlabeled, the step of configs/default.py (its
whole step trains on random stand-ins for the graph's pseudo-labels: same work).

On a GPU (`jax.default_backend() == "gpu"`) the PyTorch step runs on CUDA
too (--torch_device), synchronised after each step; jax_compute against
jax_step then shows what the on-device sampling and augmentation cost.
"""
import json
import os
import pathlib
import platform
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments.speed import (  # pylint: disable=g-import-not-at-top
    BENCH_MODELS, FULL_STEP_CONFIGS, FULL_STEP_VARIANTS, RGB_SHAPES, SHAPES,
    USB_FIXMATCH_LENET_STEP_MS,
    jax_compute, jax_full_step, load_config, time_calls, time_to_accuracy,
    time_to_target_of_runs, torch_compute)
from mnist_ten import errors  # pylint: disable=g-import-not-at-top

_MODELS = flags.DEFINE_list("models", ["lenet", "resnet"], "Models to time: "
                            f"{', '.join(BENCH_MODELS)} (lenet_nobn: the LeNet without "
                            "batch norm of ../shared/README.md's reference timing).")
_SHAPES = flags.DEFINE_list("shapes", ["supervised", "fixmatch"], "Batch shapes to time: "
                            f"{', '.join(SHAPES)} (see the docstring).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per measurement (median kept).")
_KERNEL_GRADS = flags.DEFINE_list(
    "kernel_grads", ["xla", "auto"], "Convolution kernel gradients to time (models' "
    "kernel_grad: xla = XLA's own gradient, auto = im2col on a single CPU device; "
    "the max-pool change applies to both).")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the PyTorch reference.")
_TORCH_DEVICE = flags.DEFINE_enum("torch_device", "auto", ["auto", "cpu", "cuda"],
                                  "Where the PyTorch step runs; auto: cuda when JAX "
                                  "runs on a GPU and torch sees one, else cpu.")
_NO_FULL_STEP = flags.DEFINE_bool("no_full_step", False, "Skip the trainer's whole step "
                                  "(needs the dataset).")
_TTA = flags.DEFINE_string("time_to_accuracy", None, "A config (configs/NAME.py[:preset]) "
                           "to time to --target test accuracy; skips the step timings.")
_TTA_OF = flags.DEFINE_list("time_to_accuracy_of", None, "Folders of finished "
                            "experiments/run_seeds.py runs: reads each draw's time to --target "
                            "from its logs (on its own evaluation grid); skips the step timings.")
_TARGET = flags.DEFINE_float("target", 0.99, "Test accuracy for --time_to_accuracy.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between test evaluations for "
                                   "--time_to_accuracy.")
_LABEL_SEED = flags.DEFINE_integer("label_seed", 0, "Label draw for --time_to_accuracy.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of the --time_to_accuracy run "
                               "(default: a fresh temporary folder); must not hold a run.")
_OUT = flags.DEFINE_string("out", "experiments/results/benchmark/cpu.json", "JSON output.")

def _record(framework, kind, model, shape, images, first, median, times, kernel_grad="",
            variant="", input_waits=None):
  r = {"framework": framework, "kind": kind, "model": model, "shape": shape,
       "kernel_grad": kernel_grad, "variant": variant,
       "images_per_step": images, "first_call_s": round(first, 3),
       "ms_per_step": round(1e3 * median, 2), "images_per_s": round(images / median, 1),
       "ms_all": [round(1e3 * t, 2) for t in times]}
  wait = ""
  if input_waits:  # the tf.data pipeline: how long each step waited for its batch
    r["input_wait_ms_median"] = round(1e3 * float(np.median(input_waits[1:] or input_waits)), 3)
    wait = f"  input wait {r['input_wait_ms_median']:.2f} ms"
  print(f"{framework:6s} {kind:8s} {model:7s} {kernel_grad:6s} {shape:10s} {images:5d} img/step  "
        f"first call {first:6.2f} s  {1e3 * median:8.1f} ms/step  {images / median:8.0f} img/s"
        + wait + (f"  [{variant}]" if variant else ""), flush=True)
  return r


def _write(out):
  path = pathlib.Path(_OUT.value)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1))
  print(f"wrote {path}")


def main(argv):
  del argv
  machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
             "jax": jax.__version__, "backend": jax.default_backend(),
             "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "devices": [str(d) for d in jax.devices()]}
  if _TTA_OF.value:  # a bad folder: one message that names it, nothing written
    records = {folder: time_to_target_of_runs(folder, _TARGET.value)
               for folder in _TTA_OF.value}
    _write({"machine": machine, "time_to_accuracy_of": records})
    return
  if _TTA.value:
    record = time_to_accuracy(load_config(_TTA.value), _TARGET.value, _EVAL_EVERY.value,
                              _LABEL_SEED.value, _WORKDIR.value)  # refuses before any work
    _write({"machine": machine, "time_to_accuracy": record})
    return
  out = {"machine": machine, "repeats": _REPEATS.value, "records": [], "ratios": []}
  for what, names, known in (("shape", _SHAPES.value, SHAPES),
                             ("model", _MODELS.value, BENCH_MODELS)):
    unknown = [n for n in names if n not in known]
    if unknown:
      raise errors.ConfigError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
  torch_ok = not _NO_TORCH.value
  if torch_ok:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print("torch is not installed (pip install -e '.[bench]'): no PyTorch reference")
      torch_ok = False
  torch_device = _TORCH_DEVICE.value
  if torch_ok and torch_device == "auto":
    torch_device = ("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available()
                    else "cpu")
  for model_name in _MODELS.value:
    for shape in _SHAPES.value:
      n_lab, n_unl = SHAPES[shape]
      images = n_lab + n_unl
      # (framework, kind, kernel_grad, variant) -> timed call, images
      calls, counts = {}, {}
      # Random RGB stand-ins are timed as whole steps only (no compute-only reference).
      compute = shape not in RGB_SHAPES
      for kernel_grad in _KERNEL_GRADS.value:
        if compute:
          calls["jax", "compute", kernel_grad, ""] = jax_compute(model_name, kernel_grad, images)
          counts["jax", "compute", kernel_grad, ""] = images
        if not _NO_FULL_STEP.value and shape in FULL_STEP_CONFIGS:
          variants = {"": {}, **FULL_STEP_VARIANTS.get(shape, {})}
          for variant, overrides in variants.items():
            key = ("jax", "step", kernel_grad, variant)
            calls[key], counts[key] = jax_full_step(model_name, kernel_grad, shape, overrides)
      if torch_ok and compute:
        calls["torch", "compute", "", ""], version, threads = torch_compute(
            model_name, images, torch_device)
        counts["torch", "compute", "", ""] = images
        out["machine"].update(torch=version, torch_threads=threads, torch_device=torch_device)
      timed = time_calls(calls, _REPEATS.value)
      records = {key: _record(key[0], key[1], model_name, shape, counts[key], *timed[key],
                              kernel_grad=key[2], variant=key[3],
                              input_waits=getattr(calls[key], "input_waits", None))
                 for key in calls}
      for (fw, kind, kernel_grad, variant), r in records.items():
        if variant == "pipeline=tfdata":  # the same step fed by tf.data, against the device's
          base = records[fw, kind, kernel_grad, ""]["ms_per_step"]
          out["ratios"].append({"model": model_name, "shape": shape, "kernel_grad": kernel_grad,
                                "tfdata_over_device": round(r["ms_per_step"] / base, 3)})
          print(f"  tf.data / device pipeline, whole step ({kernel_grad}): "
                f"{r['ms_per_step'] / base:.3f}", flush=True)
      out["records"] += list(records.values())
      # USB's 0.79 s was measured on this project's 2-core CPU: no yardstick elsewhere.
      if (model_name, shape) == ("lenet", "fixmatch") and jax.default_backend() == "cpu":
        for (_, kind, kernel_grad, variant), step_r in records.items():
          if kind == "step":
            ratio = step_r["ms_per_step"] / USB_FIXMATCH_LENET_STEP_MS
            out["ratios"].append({"model": model_name, "shape": shape, "kernel_grad": kernel_grad,
                                  "variant": variant, "step_over_usb": round(ratio, 3)})
            print(f"  whole FixMatch step ({kernel_grad}{', ' + variant if variant else ''}) "
                  f"/ USB's 0.79 s: {ratio:.2f}", flush=True)
      if torch_ok and compute:
        torch_ms = records["torch", "compute", "", ""]["ms_per_step"]
        for kernel_grad in _KERNEL_GRADS.value:
          ratio = records["jax", "compute", kernel_grad, ""]["ms_per_step"] / torch_ms
          out["ratios"].append({"model": model_name, "shape": shape, "kernel_grad": kernel_grad,
                                "jax_over_torch": round(ratio, 3)})
          print(f"  JAX ({kernel_grad}) / PyTorch step time, {model_name} {shape}: "
                f"{ratio:.2f}", flush=True)
  _write(out)


if __name__ == "__main__":
  app.run(errors.guard(main))
