"""The proposer: representative images from the unlabeled data alone,
ordered by coverage, written as files that training takes."""
import json

import numpy as np
import pytest

from mnist_ten import config as config_lib
from mnist_ten import datasets
from mnist_ten import graph
from mnist_ten import neighbors
from mnist_ten import propose
from mnist_ten import train
from mnist_ten.errors import ConfigError


def test_proposals_cover_the_clusters_in_order_and_training_takes_them(toy_config, tmp_path):
  data = datasets.load(toy_config.data)
  features = neighbors.unit(graph.embed(data.train_images, "pixels(dim=16)"))
  proposal = propose.propose(features, 12, seed=0)
  chosen = proposal["labeled_indices"]
  assert len(set(chosen)) == 12
  assert np.all(np.diff(proposal["coverage"]) >= -1e-9)  # each adds coverage
  # The toy's classes are its clusters: 12 proposals reach every class.
  assert set(data.train_labels[chosen]) == set(range(10))
  again = propose.propose(features, 12, seed=0)
  assert again["labeled_indices"] == chosen  # seeded
  propose.write(tmp_path / "p", proposal, data.train_images, {"dataset": "toy"})
  assert (tmp_path / "p" / "contact_sheet.png").stat().st_size > 1000
  assert (tmp_path / "p" / "labels.csv").read_text().splitlines()[:2] == [
      "index,label", f"{chosen[0]},"]
  toy_config.data.labeled_file = str(tmp_path / "p" / "proposal.json")
  toy_config.data.labeled_count = 10
  train.train_and_evaluate(toy_config, tmp_path / "run")
  split = json.loads((tmp_path / "run" / "split.json").read_text())
  assert sorted(split["labeled"]) == sorted(chosen[:10])
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["data"]["labeled_indices"] == chosen[:10]  # resolved: the saved config rebuilds it


def test_the_proposer_names_what_it_cannot_use(tmp_path):
  with pytest.raises(ConfigError, match="has no propagation round"):
    propose.graph_features_spec(config_lib.base())
  from configs import default
  assert "encoder" not in propose.graph_features_spec(default.get_config())
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(Exception, match="is not a proposal file"):
    from mnist_ten import splits
    splits.read_labeled_file(tmp_path / "bad.json")


def test_the_proposer_experiment_counts_until_every_class_and_trains_on_the_first_n(
    toy_config, tmp_path):
  from experiments import proposer
  assert proposer.until_every_class([0, 1, 1, 2], 3) == 4
  assert proposer.until_every_class([0, 1, 1], 3) == 0
  toy_config.method = "propagate"
  toy_config.augment.strong = ""
  toy_config.propagate = dict(features="pixels(dim=16)", k=5, iterations=50, keep=1.0, mu=2,
                              lambda_u=1.0, agree_with_init=False)
  rows = proposer.run(toy_config, [0], [12], tmp_path)
  assert rows[0]["n"] == 12 and 1 <= rows[0]["classes"] <= 10
  assert (tmp_path / "seed_0" / "proposal.json").exists()
  assert "12 proposed labels" in (tmp_path / "table.md").read_text()
  # Graph only: the same proposals, scored before any training.
  scored = proposer.graph_only(toy_config, [0], [12], tmp_path)
  assert scored[0]["n"] == 12 and 0.0 <= scored[0]["accuracy"] <= 1.0
  assert "12 proposed labels" in (tmp_path / "graph_table.md").read_text()
