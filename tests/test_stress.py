"""The stress protocol's labeled sets: per class, the image at quantile q of
the distance to the class's typical look; the run receives the indices and
nothing else the builder read."""
import json

import numpy as np
import pytest

from experiments import stress
from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten.errors import ConfigError


def test_the_set_holds_one_image_per_class_ordered_by_distance_to_its_mean(toy_config):
  data = datasets.load(toy_config.data)
  x, y = data.train_images, data.train_labels
  pixels = x.reshape(len(x), -1).astype(np.float32) / 255.0
  sets = {q: stress.build_set(x, y, 10, "pixels", q) for q in (0.0, 0.5, 1.0)}
  for q, chosen in sets.items():
    assert y[chosen].tolist() == list(range(10))
  for c in range(10):
    members = np.flatnonzero(y == c)
    distance = np.linalg.norm(pixels[members] - pixels[members].mean(0), axis=1)
    d = {q: np.linalg.norm(pixels[s[c]] - pixels[members].mean(0)) for q, s in sets.items()}
    assert d[0.0] == pytest.approx(distance.min()) and d[1.0] == pytest.approx(distance.max())
    assert d[0.0] <= d[0.5] <= d[1.0]
  assert stress.build_set(x, y, 10, "hog", 0.9).shape == (10,)
  with pytest.raises(ConfigError, match="must be SPACE:QUANTILE"):
    stress.parse_sets("pixels:1.5")
  assert stress.parse_sets("pixels:0.5,hog:0.99") == [("pixels", 0.5), ("hog", 0.99)]


def test_a_stress_run_trains_on_the_chosen_indices_only(toy_config, tmp_path):
  rows = stress.run(toy_config, [("pixels", 0.9)], tmp_path)
  data = datasets.load(toy_config.data)
  chosen = stress.build_set(data.train_images, data.train_labels, 10, "pixels", 0.9)
  workdir = tmp_path / "set_pixels_q0.90"
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["data"]["labeled_indices"] == chosen.tolist()
  # Apart from the indices (and the name), the run's config is the one given.
  base = json.loads(config_lib.to_json(toy_config))
  assert [d.split(":")[0] for d in config_lib.differences(base, saved)] == [
      "data.labeled_indices", "name"]
  split = json.loads((workdir / "split.json").read_text())
  assert sorted(split["labeled"]) == sorted(chosen.tolist())
  assert rows[0]["space"] == "pixels" and (tmp_path / "table.md").exists()
  assert "| pixels | 0.9 |" in (tmp_path / "table.md").read_text()
  again = stress.run(toy_config, [("pixels", 0.9)], tmp_path)  # finished: reused
  assert again[0]["test_accuracy_ema"] == rows[0]["test_accuracy_ema"]


def test_graph_only_scores_the_first_propagation_without_training(toy_config, tmp_path):
  toy_config.method = "propagate"
  toy_config.augment.strong = ""
  toy_config.propagate = dict(features="pixels(dim=16)", k=5, iterations=50, keep=1.0, mu=2,
                              lambda_u=1.0, agree_with_init=False, size_bounds=(0.5, 2.0))
  rows = stress.graph_only(toy_config, [("pixels", 0.5), ("hog", 1.0)], tmp_path)
  data = datasets.load(toy_config.data)
  assert sorted(rows[0]["labeled_indices"]) == sorted(
      stress.build_set(data.train_images, data.train_labels, 10, "pixels", 0.5).tolist())
  for row in rows:
    assert len(row["per_class_accuracy"]) == 10 and 0.0 <= row["pseudo_label_accuracy"] <= 1.0
    assert sum(row["pseudo_label_shares"]) == pytest.approx(1.0)
    assert "size_bounds_moved" in row
  assert "| hog | 1 |" in (tmp_path / "graph_table.md").read_text()
  assert not list(tmp_path.glob("set_*"))  # nothing trained
  with pytest.raises(ConfigError, match="needs a propagate config"):
    stress.graph_only(_supervised(toy_config), [("pixels", 0.5)], tmp_path)


def _supervised(config):
  config = config.copy_and_resolve_references()
  config.method = "supervised"
  return config
