"""Ensembles: the voting arithmetic, selectors that read no test label, and
experiments/ensemble.py end to end (members trained once, then reused)."""
import json
import runpy
import shutil

import numpy as np
import pytest

from experiments import ensemble as ensemble_exp
from mnist_ten import ensemble
from mnist_ten.errors import ConfigError, WorkdirError
from tests.conftest import ROOT


def test_soft_and_hard_votes_by_hand():
  probs = np.array([[[0.6, 0.4], [0.2, 0.8], [0.45, 0.55]],
                    [[0.6, 0.4], [0.3, 0.7], [0.45, 0.55]],
                    [[0.0, 1.0], [0.9, 0.1], [0.9, 0.1]]])
  np.testing.assert_allclose(ensemble.soft_vote(probs)[0], [0.4, 0.6])
  # Images 0 and 2: the majority (0; 1) is outweighed by one confident member.
  assert ensemble.soft_vote(probs).argmax(-1).tolist() == [1, 1, 0]
  assert ensemble.hard_vote(probs).tolist() == [0, 1, 1]
  # A tie (one vote each) goes to the tied class with the higher mean probability.
  assert ensemble.hard_vote(np.array([[[0.9, 0.1, 0.0]], [[0.3, 0.7, 0.0]]])).tolist() == [0]
  assert ensemble.hard_vote(np.array([[[0.6, 0.4, 0.0]], [[0.1, 0.9, 0.0]]])).tolist() == [1]


def _members(num_unlabeled=500, seed=0):
  """Three members on 3 classes: two right on 90% of images, one that calls every 2 a 1."""
  rng = np.random.default_rng(seed)
  truth_test, truth_unl = rng.integers(0, 3, 300), rng.integers(0, 3, num_unlabeled)

  def probs(truth, collapsed, noise):
    guess = np.where(rng.uniform(size=truth.size) < noise, rng.integers(0, 3, truth.size), truth)
    if collapsed:
      guess = np.where(guess == 2, 1, guess)
    return np.eye(3)[guess] * 0.8 + 0.2 / 3
  return [ensemble.Member(f"m{i}", probs(truth_test, i == 2, 0.1), truth_test,
                          unlabeled_probs=probs(truth_unl, i == 2, 0.1)) for i in range(3)]


def test_agreement_drops_the_member_that_gave_a_class_away_and_reads_no_test_label():
  members = _members()
  out = ensemble.combine(members, "agreement", tolerance=0.05)
  assert out["selected"]["members"] == [0, 1]
  assert out["members"][2]["agreement_score"] < out["members"][0]["agreement_score"] - 0.1
  assert out["selected"]["accuracy"] > max(m.test_accuracy for m in members[2:])
  # The test labels score the choice, never make it: scrambled, the same members are chosen.
  for m in members:
    m.test_labels = np.random.default_rng(1).permutation(m.test_labels)
  assert ensemble.combine(members, "agreement", tolerance=0.05)["selected"]["members"] == [0, 1]


def test_validation_selector_needs_a_validation_split_and_uses_its_labels():
  members = _members()
  with pytest.raises(ConfigError, match="needs members that held out a validation split"):
    ensemble.combine(members, "validation")
  labels = np.array([0, 1, 2, 2])
  for i, m in enumerate(members):
    m.val_labels = labels
    m.val_probs = np.eye(3)[[0, 1, 2, 2] if i != 1 else [0, 1, 1, 1]]
  out = ensemble.combine(members, "validation", tolerance=0.0)
  assert out["selected"]["members"] == [0, 2]
  assert [m["validation_score"] for m in out["members"]] == [1.0, 0.5, 1.0]


def test_selectors_the_members_cannot_serve_are_refused_before_any_training(toy_config):
  toy_config.data.labels_per_class = -1
  with pytest.raises(ConfigError, match="needs a labeled validation split"):
    ensemble.check("validation", toy_config, 5, 0.005)
  with pytest.raises(ConfigError, match="needs unlabeled train images"):
    ensemble.check("agreement", toy_config, 3, 0.005)
  toy_config.data.labels_per_class = 3
  with pytest.raises(ConfigError, match="at least three members"):
    ensemble.check("agreement", toy_config, 2, 0.005)
  with pytest.raises(ConfigError, match="tolerance=-0.1 must be >= 0"):
    ensemble.check("agreement", toy_config, 3, -0.1)
  ensemble.check("agreement", toy_config, 3, 0.0)


def test_ensemble_script_trains_members_once_and_writes_the_combination(toy_config, tmp_path):
  toy_config.data.labels_per_class = 3
  out = tmp_path / "ens"
  overrides = ensemble_exp.parse_member_overrides(["2:model.widths=(16,)"], 3)
  record = ensemble_exp.run_draw(toy_config, 0, 3, out, "agreement", 0.005, overrides)
  assert len(record["member_test_accuracy_ema"]) == 3
  assert record["member_overrides"] == {"2": ["model.widths=(16,)"]}
  for m in (0, 1, 2):
    saved = json.loads((out / "seed_0" / f"member_{m}" / "config.json").read_text())
    assert saved["seed"] == m and saved["data"]["label_seed"] == 0  # same labels, own init
    assert saved["model"]["widths"] == ([16] if m == 2 else [32])  # and its own settings
  # A finished member is not reused for other settings: its numbers would be the wrong model's.
  with pytest.raises(WorkdirError, match=r"member_2' holds a finished run of a different "
                                         r"config \(model.widths: \[16\] -> \[32\]\)"):
    ensemble_exp.run_draw(toy_config, 0, 3, out, "agreement", 0.005)
  a, b = (json.loads((out / "seed_0" / f"member_{m}" / "split.json").read_text())
          for m in (0, 1))
  assert a["labeled"] == b["labeled"]
  assert 0.0 <= record["test_accuracy_ema"] <= 1.0 and "hard_vote" in record
  stamp = (out / "seed_0" / "member_0" / "results.json").stat().st_mtime_ns
  again = ensemble_exp.run_draw(toy_config, 0, 3, out, "agreement", 0.005, overrides)
  assert (out / "seed_0" / "member_0" / "results.json").stat().st_mtime_ns == stamp  # reused
  assert again["test_accuracy_ema"] == record["test_accuracy_ema"]
  # What git keeps of a member (results, config, split, cached probabilities)
  # combines on a fresh checkout, where its checkpoints are gone.
  kept = {"results.json", "config.json", "split.json", "ensemble_probs.npz"}
  for m in (0, 1, 2):
    for path in (out / "seed_0" / f"member_{m}").iterdir():
      if path.name not in kept:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
  fresh = ensemble_exp.run_draw(toy_config, 0, 3, out, "agreement", 0.005, overrides)
  assert fresh["test_accuracy_ema"] == record["test_accuracy_ema"]
  assert fresh["selected"] == record["selected"]
  table = ensemble_exp.table(out)
  assert "soft vote" in table and "| 0 |" in table


@pytest.mark.parametrize("text,message", [
    ("3:optim.lr=1", "M a member from 0 to 2"), ("x:optim.lr=1", "M a member from 0 to 2"),
    ("optim.lr=1", "write it as M:key.path=value"),
    ("1:seed=5", "share its data and split"), ("1:data.label_seed=2", "share its data")])
def test_member_overrides_name_a_member_that_exists(text, message):
  with pytest.raises(ConfigError, match=message):
    ensemble_exp.parse_member_overrides([text], 3)


def test_a_member_setting_is_typed_like_the_key_it_sets(toy_config):
  from mnist_ten import config as config_lib
  config_lib.override(toy_config, "optim.lr=1")
  assert toy_config.optim.lr == 1.0 and isinstance(toy_config.optim.lr, float)
  config_lib.override(toy_config, "augment.labeled=hflip|crop(pad=2)")
  assert toy_config.augment.labeled == "hflip|crop(pad=2)"
  config_lib.override(toy_config, "model=lenet")  # a model with all its defaults
  assert toy_config.model.name == "lenet" and "widths" not in toy_config.model
  config_lib.override(toy_config, "plots=true")
  assert toy_config.plots is True
  for text, message in (("optim.nope=1", "the config has no key 'optim.nope'"),
                        ("batch_size=many", "batch_size must be int, got 'many'"),
                        ("optim.lr=None", "optim.lr must be float, got None"),
                        ("plots=maybe", "plots must be bool"),
                        ("optim.lr", "write it as key.path=value")):
    with pytest.raises(ConfigError, match=message):
      config_lib.override(toy_config, text)

  # A later stage takes these from the last one (train.pretrain_config): refused, not ignored.
  staged = runpy.run_path(str(ROOT / "configs" / "default.py"))["get_config"]()
  config_lib.override(staged, "pretrain.propagate.k=15")
  assert staged.pretrain.propagate.k == 15 and staged.propagate.k == 10
  with pytest.raises(ConfigError, match="every stage takes model, data, seed and plots"):
    config_lib.override(staged, "pretrain.model=lenet")
