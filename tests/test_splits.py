import numpy as np
import pytest

from mnist_ten import input_pipeline
from mnist_ten import splits
from mnist_ten.errors import DataError

LABELS = np.random.default_rng(0).integers(0, 10, 5000)


def test_split_is_deterministic_and_one_per_class():
  a = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3)
  b = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3)
  c = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=4)
  np.testing.assert_array_equal(a.labeled, b.labeled)
  assert not np.array_equal(a.labeled, c.labeled)
  np.testing.assert_array_equal(LABELS[a.labeled], np.arange(10))


def test_split_matches_documented_numpy_draw():
  # The documented rule: for each class c in order, rng.choice over its indices.
  rng = np.random.default_rng(7)
  expected = [rng.choice(np.flatnonzero(LABELS == c), 2, replace=False) for c in range(10)]
  got = splits.make_split(LABELS, 10, labels_per_class=2, label_seed=7).labeled
  np.testing.assert_array_equal(got, np.concatenate(expected))


def test_split_partitions_train_set():
  s = splits.make_split(LABELS, 10, labels_per_class=5, label_seed=0, validation_size=500)
  everything = np.concatenate([s.labeled, s.unlabeled, s.validation])
  assert everything.size == LABELS.size
  np.testing.assert_array_equal(np.sort(everything), np.arange(LABELS.size))
  assert s.validation.size == 500 and s.labeled.size == 50


def test_split_comes_back_from_its_json_record():
  s = splits.make_split(LABELS, 10, labels_per_class=2, label_seed=1, validation_size=300)
  back = splits.Split.from_json(s.to_json(), LABELS.size)
  for name in ("labeled", "unlabeled", "validation"):
    np.testing.assert_array_equal(getattr(back, name), getattr(s, name))


def test_explicit_indices_and_all_labels():
  s = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=0,
                        labeled_indices=(5, 9, 100))
  np.testing.assert_array_equal(s.labeled, [5, 9, 100])
  assert 5 not in s.unlabeled
  full = splits.make_split(LABELS, 10, labels_per_class=-1, label_seed=0)
  assert full.labeled.size == LABELS.size and full.unlabeled.size == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels_per_class=10_000), "class 0 has only"),
    (dict(labels_per_class=0), "labels_per_class must be"),
    (dict(labels_per_class=1, labeled_indices=(1, 1)), "duplicates"),
    (dict(labels_per_class=1, labeled_indices=(99_999,)), "indices in"),
])
def test_bad_split_requests_name_the_problem(kwargs, message):
  with pytest.raises(DataError, match=message):
    splits.make_split(LABELS, 10, label_seed=0, **kwargs)


def test_train_data_holds_no_unlabeled_labels():
  # The only object the trainer receives has no field for the unlabeled labels.
  # Pseudo-labels are a method's guesses, filled in by its `prepare` from the
  # images and the labeled examples; the data as built holds none.
  fields = set(input_pipeline.TrainData.__dataclass_fields__)
  assert fields == {"labeled_images", "labeled_labels", "unlabeled_images",
                    "pseudo_labels", "pseudo_weights", "num_unlabeled"}
  assert input_pipeline.TrainData.__dataclass_fields__["pseudo_labels"].default is None


def test_num_unlabeled_keeps_a_seeded_draw_and_the_same_labels():
  full = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3)
  sub = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3, num_unlabeled=100)
  assert np.array_equal(sub.labeled, full.labeled) and sub.unlabeled.size == 100
  assert np.isin(sub.unlabeled, full.unlabeled).all()
  again = splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3, num_unlabeled=100)
  assert np.array_equal(again.unlabeled, sub.unlabeled)
  back = splits.Split.from_json(sub.to_json(), LABELS.size)
  assert np.array_equal(back.unlabeled, sub.unlabeled)
  with pytest.raises(DataError, match="num_unlabeled must be >= 0"):
    splits.make_split(LABELS, 10, labels_per_class=1, label_seed=3, num_unlabeled=-5)
