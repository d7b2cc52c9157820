import numpy as np

from mnist_ten import evaluate


def test_metrics_on_a_known_confusion():
  labels = np.array([0, 0, 0, 1, 1, 2])
  preds = np.array([0, 0, 1, 1, 1, 0])
  m = evaluate.classification_metrics(labels, preds, 3)
  assert m["accuracy"] == 4 / 6
  assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
  np.testing.assert_allclose(m["per_class_accuracy"], [2 / 3, 1.0, 0.0], atol=1e-6)
  f1 = [2 * (2 / 3) * (2 / 3) / (4 / 3), 2 * (2 / 3) * 1.0 / (5 / 3), 0.0]
  np.testing.assert_allclose(m["macro_f1"], np.mean(f1))


def test_evaluators_by_name_with_their_own_cadence(toy_config, tmp_path):
  import json
  from mnist_ten import train
  toy_config.num_steps, toy_config.eval_every = 6, 2
  toy_config.evals = {"head": {}, "knn": {"every": 3}, "probe": {"type": "linear_probe"}}
  toy_config.plots = False
  results = train.train_and_evaluate(toy_config, tmp_path)
  evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
  ran = [(e["step"], sorted(k for k in e if isinstance(e[k], dict))) for e in evals]
  # head and the probe every eval_every = 2 steps, knn every 3, all at the end.
  assert ran == [(2, ["head", "probe"]), (3, ["knn"]), (4, ["head", "probe"]),
                 (6, ["head", "knn", "probe"])]
  assert all(e["report"] == "head" for e in evals)
  assert results["report_eval"] == "head"
  assert results["test_accuracy_ema"] == evals[-1]["head"]["test_ema"]["accuracy"]
  assert set(results["evals"]) == {"head", "knn", "probe"}
  # The toy classes are bars at class-specific rows: the nearest labeled bar,
  # or a linear probe on it, is right far above chance even after 6 steps.
  assert results["evals"]["knn"]["test_ema"] > 0.5
  assert results["evals"]["probe"]["test_ema"] > 0.5
  heads = [e["head"]["test_ema"]["accuracy"] for e in evals if "head" in e]
  assert results["test_accuracy_ema_median"] == np.median(heads)
  assert results["median_of_evals"] == 3
  # Provenance of every new result.
  assert results["jax_version"] and results["flax_version"] and results["optax_version"]
  assert "git_commit" in results and "git_dirty" in results


def test_report_evaluator_and_unknown_evaluators_are_refused(toy_config, tmp_path):
  import pytest
  from mnist_ten import train
  from mnist_ten.errors import ConfigError
  toy_config.evals = {"head": {}, "nope": {}}
  with pytest.raises(ConfigError, match="unknown evaluator 'nope'"):
    train.train_and_evaluate(toy_config, tmp_path / "a")
  toy_config.evals = {"head": {}}
  toy_config.eval_report = "vote"  # the supervised method does not vote
  with pytest.raises(ConfigError, match="eval_report='vote'"):
    train.train_and_evaluate(toy_config, tmp_path / "b")
  toy_config.eval_report = "auto"
  toy_config.evals = {"head": {"every": 3}}  # not a multiple of steps_per_dispatch
  toy_config.steps_per_dispatch, toy_config.checkpoint_every = 2, 6
  with pytest.raises(ConfigError, match="evals.head.every"):
    train.train_and_evaluate(toy_config, tmp_path / "c")
  assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_evaluators_that_do_not_apply_are_refused_before_any_work(toy_config, tmp_path):
  import pytest
  from mnist_ten import train
  from mnist_ten.errors import ConfigError
  toy_config.evals = {"vote": {}}  # the supervised method has no vote
  with pytest.raises(ConfigError, match="none of config.evals"):
    train.train_and_evaluate(toy_config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_cadence_overrides_from_the_command_line(toy_idx_dir, tmp_path):
  import json
  import subprocess
  import sys
  from tests.conftest import ROOT
  out = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/supervised.py:quick,model=mlp",
       f"--workdir={tmp_path}", "--config.data.name=toy", f"--config.data.idx_dir={toy_idx_dir}",
       "--config.num_steps=8", "--config.log_every=4", "--config.checkpoint_every=8",
       "--config.eval_every=8", "--config.evals.head.every=2", "--config.plots=False"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  steps = [json.loads(line)["step"] for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
  assert steps == [2, 4, 6, 8]


def test_flip_averages_the_head_over_each_image_and_its_mirror():
  import jax
  import jax.numpy as jnp
  from mnist_ten import input_pipeline, models
  model = models.MODELS.get("mlp")(widths=(8,))
  images = np.random.default_rng(0).integers(0, 256, (5, 6, 4, 1), dtype=np.uint8)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 4, 1)), train=False)
  ctx = evaluate.EvalContext(
      model=model, method=None,
      eval_sets=[input_pipeline.EvalSet("test", jnp.asarray(images), np.zeros(5, int), images)],
      labeled_images=None, labeled_labels=None, num_classes=10, batch_size=4, sharding=None)
  flip = evaluate.EVALUATORS.get("flip")("flip", {}, ctx)
  scores = flip.scores(evaluate.EvalRound({"ema": variables}), "ema", ctx.eval_sets[0])

  def probs(x):
    return np.asarray(jax.nn.softmax(model.apply(variables, jnp.asarray(x, jnp.float32) / 255,
                                                 train=False)))
  np.testing.assert_allclose(scores, (probs(images) + probs(images[:, :, ::-1])) / 2, atol=1e-6)
  # A mirror image changes this MLP's output: the average is not the head's.
  assert np.abs(probs(images) - probs(images[:, :, ::-1])).max() > 1e-3


def test_flip_at_the_end_only_is_the_report_where_mirrors_keep_labels(toy_config, tmp_path):
  import json
  import pytest
  from mnist_ten import train
  from mnist_ten.errors import ConfigError
  toy_config.num_steps, toy_config.eval_every = 6, 2
  toy_config.evals = {"head": {}, "flip": {"every": -1}}
  # The toy digits are bars along rows: a mirror image keeps the class, but
  # 'auto' knows only named datasets.
  with pytest.raises(ConfigError, match="mirror image changes 'toy'"):
    train.train_and_evaluate(toy_config, tmp_path / "refused")
  assert not (tmp_path / "refused").exists()
  toy_config.data.hflip = "true"
  results = train.train_and_evaluate(toy_config, tmp_path / "run")
  evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
  assert [(e["step"], sorted(k for k in e if isinstance(e[k], dict))) for e in evals] == [
      (2, ["head"]), (4, ["head"]), (6, ["flip", "head"])]
  assert results["report_eval"] == "flip"
  assert results["test_accuracy_ema"] == evals[-1]["flip"]["test_ema"]["accuracy"]
