"""Graph propagation pieces: features, the kNN graph, Poisson learning, and
the class-balanced confidence mask."""
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_ten import graph
from mnist_ten import neighbors
from mnist_ten.errors import ConfigError


def _slanted_bar(slant):
  image = np.zeros((28, 28, 1), np.float32)
  for r in range(4, 24):
    c = int(round(14 + slant * (r - 14)))
    image[r, c - 1:c + 2] = 1.0
  return image


def test_deskew_straightens_a_slanted_stroke_and_centres_it():
  image = jnp.asarray(_slanted_bar(0.4))
  out = np.asarray(graph.deskew(image))[..., 0]
  cols = [np.average(np.arange(28), weights=row) for row in out[6:22] if row.sum() > 0.5]
  assert np.ptp(cols) < 1.5  # the column no longer drifts with the row
  ys, xs = np.nonzero(out > 0.5)
  assert abs(xs.mean() - 13.5) < 1.0
  # An upright stroke is only moved (by half a pixel, to the exact centre).
  straight = np.asarray(graph.deskew(jnp.asarray(_slanted_bar(0.0))))[..., 0]
  assert abs(straight.sum() - _slanted_bar(0.0).sum()) < 1.0
  np.testing.assert_allclose(straight[:, 12:17].sum(1), _slanted_bar(0.0)[:, 12:17, 0].sum(1),
                             atol=1e-5)


def test_hog_blocks_are_unit_norm_and_see_orientation():
  vertical, horizontal = _slanted_bar(0.0), np.transpose(_slanted_bar(0.0), (1, 0, 2))
  hv = np.asarray(graph.hog(jnp.asarray(vertical), cell=4)).reshape(-1, 36)
  hh = np.asarray(graph.hog(jnp.asarray(horizontal), cell=4)).reshape(-1, 36)
  assert hv.shape == (36, 36)  # 6 x 6 blocks of 2 x 2 cells x 9 bins
  norms = np.linalg.norm(hv, axis=1)
  assert np.all(norms <= 1.0 + 1e-5) and norms.max() > 0.9
  # A vertical bar has horizontal gradients (bin 0), a horizontal one vertical (bin 4-5).
  bins_v = hv.reshape(-1, 9).sum(0)
  bins_h = hh.reshape(-1, 9).sum(0)
  assert bins_v.argmax() in (0, 8) and bins_h.argmax() in (4, 5)


def test_knn_graph_matches_brute_force():
  x = np.random.default_rng(0).normal(size=(250, 5)).astype(np.float32)
  x[200] = x[17]  # a duplicate, in another block: each is the other's first neighbour
  sims, idx = graph.knn_graph(x, 4, chunk=64)  # 250 is not a multiple of 64
  assert idx[17, 0] == 200 and idx[200, 0] == 17
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  full = unit @ unit.T
  np.fill_diagonal(full, -np.inf)
  expected = np.argsort(-full, axis=1, kind="stable")[:, :4]  # ties: the lower index
  np.testing.assert_array_equal(idx, expected)
  np.testing.assert_allclose(sims, np.take_along_axis(full, expected, 1), atol=1e-5)
  # Neighbours with negative similarity: still real rows, never the padding,
  # with k above the chunk, and with fewer rows than one chunk.
  _, idx = graph.knn_graph(x, 200, chunk=64)
  assert idx.max() < 250 and (idx != np.arange(250)[:, None]).all()
  np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :200])
  _, idx = graph.knn_graph(x[:40], 5, chunk=64)
  small = full[:40, :40]
  np.testing.assert_array_equal(idx, np.argsort(-small, axis=1, kind="stable")[:, :5])
  with pytest.raises(ConfigError, match="k=250"):
    graph.knn_graph(x, 250)


def test_graph_compilations_are_reused_across_calls_and_rounds():
  # A new database of the same shape (the next round's graph, the vote's
  # memory) must not compile the search again: it is an argument, not a
  # constant of a new program.
  rng = np.random.default_rng(0)
  graph.knn_graph(rng.normal(size=(100, 5)).astype(np.float32), 3, chunk=32)
  compiled = neighbors._self_top_k._cache_size()
  x = rng.normal(size=(100, 5)).astype(np.float32)
  _, idx = graph.knn_graph(x, 3, chunk=32)
  assert neighbors._self_top_k._cache_size() == compiled
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  full = unit @ unit.T
  np.fill_diagonal(full, -np.inf)
  np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])  # the new rows' graph
  # Feature functions: one jitted function for the blocks together, for every fit.
  images = rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
  first, a = graph.fit_embedding(images, "deskew(dim=8)|hog(cell=7, dim=4)")
  second, b = graph.fit_embedding(images, "hog(dim=4, cell=7)|deskew(dim=8)")
  assert [fn for fn, _ in first.groups] == [fn for fn, _ in second.groups]
  np.testing.assert_array_equal(a, np.concatenate([b[:, 4:], b[:, :4]], 1))  # spec order
  with pytest.raises(ConfigError, match="options must be numbers"):
    graph.fit_embedding(images, "hog(cell=[4])")


def test_poisson_learning_labels_each_cluster_from_one_seed():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(3, 8)) * 5
  labels = np.repeat(np.arange(3), [120, 60, 30])  # unbalanced clusters
  x = centres[labels] + rng.normal(size=(labels.size, 8))
  seeds = np.array([0, 120, 180])
  sims, idx = graph.knn_graph(x, 6)
  scores = np.asarray(graph.poisson_learning(
      jnp.asarray(idx), jnp.asarray(graph.edge_weights(sims)), jnp.asarray(seeds),
      jnp.asarray(labels[seeds]), num_classes=3, iterations=300))
  pseudo, _ = graph.confident_labels(scores, 1.0)
  assert (pseudo == labels).mean() == 1.0


def test_confident_labels_keeps_a_fraction_of_each_class():
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(1000, 4))
  scores[:, 0] *= 10  # a class on a larger scale must not take over
  labels, mask = graph.confident_labels(scores, 0.5)
  counts = np.bincount(labels, minlength=4)
  assert counts.min() > 150  # standardised columns: no class swallows the rest
  for c in range(4):
    assert abs(mask[labels == c].sum() - 0.5 * counts[c]) <= 1
  # The kept ones are the clearest: larger margins than the dropped ones.
  z = (scores - scores.mean(0)) / scores.std(0)
  top2 = np.sort(z, 1)[:, -2:]
  margin = top2[:, 1] - top2[:, 0]
  for c in range(4):
    members = labels == c
    assert margin[members & (mask == 1)].min() >= margin[members & (mask == 0)].max()
  # A class with no labeled example has a flat column (no source): it takes no row.
  scores[:, 3] = 0.0
  labels, _ = graph.confident_labels(scores, 0.5)
  assert not (labels == 3).any() and set(labels.tolist()) == {0, 1, 2}


def _group_beside_a_class(group_angle, rng):
  """Two classes as directions 90 degrees apart (200 points each) and a group
  of 40 class-0 points at `group_angle` degrees, between them."""
  def blob(angle, n):
    centre = np.zeros(8)
    centre[:2] = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    return centre + 0.08 * rng.standard_normal((n, 8))
  x = np.concatenate([blob(0, 200), blob(group_angle, 40), blob(90, 200)])
  truth = np.repeat([0, 1], [240, 200])
  return graph.weighted_knn_graph(x, 10), truth


def test_refine_labels_moves_a_mislabelled_group_to_the_class_its_edges_favour():
  rng = np.random.default_rng(4)
  (neighbors, weights), truth = _group_beside_a_class(20, rng)
  fixed = np.zeros(truth.size, bool)
  fixed[[0, 300]] = True  # one labeled node per class
  # Poisson learning gave the group (nearer class 0) to class 1.
  wrong = truth.copy()
  wrong[200:240] = 1
  refined, moved = graph.refine_labels(neighbors, weights, wrong, fixed, num_classes=2,
                                       min_size=10)
  assert moved == 1
  np.testing.assert_array_equal(refined, truth)
  # Right labels stay as they are.
  same, moved = graph.refine_labels(neighbors, weights, truth, fixed, num_classes=2,
                                    min_size=10)
  assert moved == 0
  np.testing.assert_array_equal(same, truth)
  # A labeled node inside the group pins it.
  pinned = fixed.copy()
  pinned[220] = True
  kept, moved = graph.refine_labels(neighbors, weights, wrong, pinned, num_classes=2,
                                    min_size=10)
  assert moved == 0
  np.testing.assert_array_equal(kept, wrong)


def test_refine_labels_leaves_a_group_halfway_between_classes():
  rng = np.random.default_rng(5)
  (neighbors, weights), truth = _group_beside_a_class(45, rng)
  wrong = truth.copy()
  wrong[200:240] = 1
  fixed = np.zeros(truth.size, bool)
  refined, moved = graph.refine_labels(neighbors, weights, wrong, fixed, num_classes=2,
                                       min_size=10)
  # Its edges split about evenly: no clear margin of `ratio` (2), no move.
  assert moved == 0
  np.testing.assert_array_equal(refined, wrong)


def test_embed_blocks_are_unit_norm_and_bad_specs_are_refused():
  images = (np.random.default_rng(3).random((40, 28, 28, 1)) * 255).astype(np.uint8)
  features = graph.embed(images, "deskew(dim=8)|hog(cell=7, dim=4)")
  assert features.shape == (40, 12)
  np.testing.assert_allclose(np.linalg.norm(features[:, :8], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(features[:, 8:], axis=1), 1.0, rtol=1e-5)
  with pytest.raises(ConfigError, match="unknown graph feature 'sift'"):
    graph.embed(images, "sift(dim=8)")
  with pytest.raises(ConfigError, match="graph feature 'hog'"):
    graph.embed(images, "hog(size=3)")


def test_fitted_embedding_sends_new_images_through_the_same_projection():
  rng = np.random.default_rng(4)
  images = (rng.random((60, 28, 28, 1)) * 255).astype(np.uint8)
  embedding, features = graph.fit_embedding(images, "deskew(dim=8)|hog(cell=7, dim=4)")
  np.testing.assert_allclose(features, graph.embed(images, "deskew(dim=8)|hog(cell=7, dim=4)"),
                             atol=1e-6)
  # The fitted images again, one at a time and as floats: the same features.
  np.testing.assert_allclose(embedding(images[:3].astype(np.float32)), features[:3], atol=1e-4)
  # A new image is projected, not refitted: its own PCA would centre it on itself.
  new = embedding(images[:1] // 2)
  assert new.shape == (1, 12) and np.abs(new).sum() > 0


def test_knn_vote_carries_the_memory_labels_to_new_points():
  rng = np.random.default_rng(5)
  centres = rng.normal(size=(3, 16))
  memory = np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(60, 16))
  labels = np.repeat(np.arange(3), 20)
  labels[0] = 2  # one wrong memory label is outvoted
  queries = centres + 0.05 * rng.normal(size=(3, 16))
  votes = graph.knn_vote(queries, memory, labels, k=10, num_classes=4, chunk=2)
  assert votes.shape == (3, 4)
  np.testing.assert_allclose(votes.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(votes.argmax(1), [0, 1, 2])
  assert np.all(votes[:, 3] == 0)  # a class no memory row holds gets no vote
  # k=1 is the nearest memory row's label.
  one = graph.knn_vote(memory[5:6] + 1e-3, memory, labels, k=1, num_classes=4)
  np.testing.assert_array_equal(one, [[1, 0, 0, 0]])
  with pytest.raises(ConfigError, match="k=61"):
    graph.knn_vote(queries, memory, labels, k=61, num_classes=4)


def test_size_offsets_move_nothing_within_bounds_and_restore_a_vanished_class():
  rng = np.random.default_rng(0)
  truth = np.repeat(np.arange(3), 100)
  scores = rng.normal(0, 0.3, (300, 3)) + 2.0 * np.eye(3)[truth]
  low, high = np.full(3, 50.0), np.full(3, 200.0)
  np.testing.assert_array_equal(graph.size_offsets(scores, low, high), 0.0)
  # Class 2's images prefer class 1, and class 2 second: it has all but vanished.
  faded = scores.copy()
  faded[truth == 2, 1] += 2.5
  assert np.bincount(faded.argmax(1), minlength=3)[2] < 20
  labels = (faded + graph.size_offsets(faded, low, high)).argmax(1)
  sizes = np.bincount(labels, minlength=3)
  assert sizes[2] >= 50 and (sizes <= 200).all()
  assert (truth[labels == 2] == 2).mean() > 0.95  # the rows that prefer 2 most are its own
  # A class above its bound gives up its least sure rows.
  labels = (faded + graph.size_offsets(faded, np.zeros(3), np.full(3, 150.0))).argmax(1)
  assert np.bincount(labels, minlength=3).max() <= 150


def _three_blobs():
  """Three blobs of 150 points, classes 0-1-2 from left to right, and their
  kNN graph; `seeds(place)` is one labeled point per class, class 1's the
  class-1 point nearest `place`."""
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0]])
  x = np.concatenate([c + rng.normal(0, 0.8, (150, 2)) for c in centres])
  truth = np.repeat(np.arange(3), 150)
  features = np.concatenate([x, np.full((450, 1), 3.0)], 1).astype(np.float32)
  neighbors, weights = graph.weighted_knn_graph(features, 10)

  def seeds(place):
    return np.array([np.argmin(((x - c) ** 2).sum(1) + 100 * (truth != i))
                     for i, c in enumerate([centres[0], place, centres[2]])])
  return truth, neighbors, weights, seeds


def test_size_bounds_repair_propagation_from_an_atypical_labeled_example():
  """Three blobs; class 1's one labeled point lies in blob 0's fringe, so
  Poisson learning hands most of blob 1 to its neighbours. Bounds on the
  class sizes (what one label per class implies: equal shares) win back
  most of it; a well-placed label is left exactly as it was."""
  truth, neighbors, weights, seeds_near = _three_blobs()
  bounds = (np.full(3, 0.9 * 150), np.full(3, 1.1 * 150))
  for place, plain_at_most, bounded_at_least in (([1.5, 0.0], 0.65, 0.75),
                                                 ([2.0, 0.0], 1.0, 0.99)):
    seeds = seeds_near(place)
    scores = graph.poisson_scores(neighbors, weights, seeds, truth[seeds], num_classes=3,
                                  iterations=500)
    plain, _ = graph.confident_labels(scores, 1.0)
    bounded, _ = graph.confident_labels(scores, 1.0, sizes=bounds)
    assert (plain == truth).mean() <= plain_at_most
    assert (bounded == truth).mean() >= bounded_at_least
    sizes = np.bincount(bounded, minlength=3)
    assert ((sizes >= 135) & (sizes <= 165)).all()
    if place == [2.0, 0.0]:
      np.testing.assert_array_equal(bounded, plain)  # within bounds: nothing moves


def test_reseed_gives_a_vanished_class_the_cluster_its_neighbour_took():
  """Three blobs; class 1's one labeled point lies on blob 1's fringe next to
  blob 0, so Poisson learning hands most of blob 1 to class 2, which holds
  two blobs. Re-seeding splits class 2's nodes at their weakest cut and gives
  class 1 the side without class 2's labeled node; a well-placed label (no
  class below half its share) is left exactly as it was."""
  truth, neighbors, weights, seeds_near = _three_blobs()
  for place, moved in (([1.5, 0.0], True), ([4.0, 0.0], False)):
    seeds = seeds_near(place)
    scores = graph.poisson_scores(neighbors, weights, seeds, truth[seeds], num_classes=3,
                                  iterations=500)
    plain, _ = graph.confident_labels(scores, 1.0)
    plain[seeds] = truth[seeds]
    labeled = np.isin(np.arange(450), seeds)
    reseeded, moves = graph.reseed_vanished(neighbors, weights, scores, plain, labeled,
                                            np.full(3, 1 / 3))
    np.testing.assert_array_equal(reseeded[seeds], truth[seeds])
    if moved:
      assert (plain == truth).mean() < 0.65 and (reseeded == truth).mean() > 0.85
      assert [(a, b) for a, b, *_ in moves] == [(1, 2)]
      assert moves[0][4:] == (0, -1)  # its former nodes are 1s: they stay
      assert moves[0][2] == int((reseeded != plain).sum())
    else:
      assert moves == [] and (reseeded == plain).all()


def test_reseed_hands_a_vanished_class_s_former_images_to_the_class_they_join():
  """Class 1's one labeled point lies inside blob 0 (an atypical example
  that looks like a 0): Poisson learning gives class 1 a piece of blob 0 and
  hands blob 1 to a neighbour. Re-seeding gives class 1 blob 1 back, and the
  piece of blob 0 it held, whose edges lead to class 0 and not to blob 1,
  goes back to class 0; the labeled point keeps its label."""
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0]])
  x = np.concatenate([c + rng.normal(0, 0.8, (150, 2)) for c in centres] + [[[0.3, 0.0]]])
  truth = np.concatenate([np.repeat(np.arange(3), 150), [1]])
  features = np.concatenate([x, np.full((451, 1), 3.0)], 1).astype(np.float32)
  neighbors, weights = graph.weighted_knn_graph(features, 10)
  seeds = np.array([np.argmin((x[:150] ** 2).sum(1)), 450, 300 + np.argmin(
      ((x[300:450] - centres[2]) ** 2).sum(1))])
  scores = graph.poisson_scores(neighbors, weights, seeds, truth[seeds], num_classes=3,
                                iterations=500)
  plain, _ = graph.confident_labels(scores, 1.0)
  plain[seeds] = truth[seeds]
  former = np.flatnonzero((plain == 1) & (truth == 0))
  assert former.size >= 10 and np.mean(plain[150:300] == 1) < 0.3  # the piece, blob 1 lost
  labeled = np.isin(np.arange(451), seeds)
  reseeded, moves = graph.reseed_vanished(neighbors, weights, scores, plain, labeled,
                                          np.full(3, 1 / 3))
  assert len(moves) == 1 and moves[0][0] == 1 and moves[0][5] == 0
  assert (reseeded[former] == 0).all() and reseeded[450] == 1
  assert np.mean(reseeded[150:300] == 1) > 0.8 and (reseeded == truth).mean() > 0.9
