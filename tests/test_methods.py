import jax.numpy as jnp
import numpy as np

from mnist_ten.methods import knn


def test_knn_predicts_the_nearest_labeled_example():
  train_x = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  train_y = jnp.asarray([0, 1, 2])
  query = jnp.asarray([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
  pred = knn.knn_predict(train_x, train_y, query, k=1, num_classes=3)
  np.testing.assert_array_equal(pred, [0, 1, 2, 1])


def test_knn_majority_vote():
  train_x = jnp.asarray([[0.0], [1.0], [1.5], [10.0]])
  train_y = jnp.asarray([0, 1, 1, 0])
  # Nearest is class 0, but 2 of the 3 nearest are class 1.
  pred = knn.knn_predict(train_x, train_y, jnp.asarray([[0.4]]), k=3, num_classes=2)
  assert int(pred[0]) == 1
