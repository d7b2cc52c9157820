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
