"""Graph-based label propagation: from a handful of labels to pseudo-labels
for every unlabeled image.

1. Features in which nearest neighbours tend to share a class. Raw pixels are
   poor; moment-based deskewing (the classic MNIST normalisation) and
   histograms of oriented gradients (Dalal & Triggs 2005) are invariant to
   slant and stroke position, and their concatenation is far better. A
   trained encoder's features can be added (`encoder`).
2. A k-nearest-neighbour graph (cosine similarity, exact, in chunks on device)
   with self-tuning Gaussian weights (Zelnik-Manor & Perona 2004).
3. Poisson learning (Calder et al. 2020) from the labeled nodes: unlike
   Laplace learning / label propagation it stays informative with one label
   per class, where label propagation's solution flattens towards a constant.
4. Refinement (`refine_labels`): Poisson learning can hand a whole
   sub-style of a digit to the wrong class (e.g. 9s with a hooked tail,
   labelled 3) even though the sub-style's edges lead mostly to its own
   class. Within each class, sub-communities are cut out by spectral sweeps
   and moved to the class their edges favour by a clear margin.
5. For new images (`knn_vote`): the fitted features (`fit_embedding`) and a
   vote of their k nearest training images' labels, the graph's labels
   carried to images that never joined it.

Everything is a pure JAX function and runs on the accelerator when there is one.
Measurements of each feature and of the refinement: docs/default_recipe.md.
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from mnist_ten import augment
from mnist_ten import neighbors as knn_search
from mnist_ten.augment import _identity_grid, _sample
from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

# name -> factory(**options) -> fn(images float [N, H, W, C] in [0, 1]) -> [N, D]
FEATURES: Registry = Registry("graph feature")


def deskew(image):
  """Shear the image so that its principal axis is vertical and move its
  centre of mass to the centre (image moments, as in LeCun et al. 1998)."""
  grey = image.mean(-1)
  ys, xs = _identity_grid(image.shape)
  total = grey.sum() + 1e-6
  my, mx = (ys * grey).sum() / total, (xs * grey).sum() / total
  var_y = ((ys - my) ** 2 * grey).sum() / total
  cov = ((ys - my) * (xs - mx) * grey).sum() / total
  slant = cov / (var_y + 1e-6)
  cy, cx = (image.shape[0] - 1) / 2.0, (image.shape[1] - 1) / 2.0
  return _sample(image, ys - cy + my, slant * (ys - cy) + xs - cx + mx)


def hog(image, *, cell: int = 4, bins: int = 9):
  """Histograms of oriented gradients: unsigned orientations in `bins` bins
  (linear vote), summed over cell x cell cells, L2-normalised over
  overlapping 2 x 2 blocks of cells."""
  grey = image.mean(-1)
  gy = jnp.pad(grey[2:] - grey[:-2], ((1, 1), (0, 0)))
  gx = jnp.pad(grey[:, 2:] - grey[:, :-2], ((0, 0), (1, 1)))
  magnitude = jnp.sqrt(gx ** 2 + gy ** 2)
  position = (jnp.arctan2(gy, gx) % jnp.pi) / jnp.pi * bins
  low = jnp.floor(position)
  frac = position - low
  low = low.astype(jnp.int32) % bins
  votes = (jax.nn.one_hot(low, bins) * (magnitude * (1 - frac))[..., None]
           + jax.nn.one_hot((low + 1) % bins, bins) * (magnitude * frac)[..., None])
  h, w = grey.shape[0] // cell, grey.shape[1] // cell
  cells = votes[:h * cell, :w * cell].reshape(h, cell, w, cell, bins).sum((1, 3))
  blocks = jnp.concatenate([cells[:-1, :-1], cells[1:, :-1], cells[:-1, 1:], cells[1:, 1:]],
                           axis=-1).reshape((h - 1) * (w - 1), 4 * bins)
  blocks = blocks / jnp.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-3)
  return blocks.reshape(-1)


def _per_image(fn):
  return lambda images: jax.vmap(fn)(images).reshape(images.shape[0], -1)


@FEATURES.register("pixels")
def pixels_features():
  return lambda images: images.reshape(images.shape[0], -1)


@FEATURES.register("deskew")
def deskew_features():
  return _per_image(deskew)


@FEATURES.register("hog")
def hog_features(*, cell: int = 4, bins: int = 9, deskewed: bool = True):
  fn = (lambda im: hog(deskew(im), cell=cell, bins=bins)) if deskewed else \
      functools.partial(hog, cell=cell, bins=bins)
  return _per_image(fn)


def fit_pca(x: np.ndarray, dim: int, fit_every: int = 10) -> Tuple[np.ndarray, np.ndarray]:
  """(mean [D], components [D, dim]) of the top `dim` principal components,
  fitted on every `fit_every`-th row (6,000 of 60,000 rows are plenty and 10x
  cheaper). With dim >= D the components are the identity (centring only)."""
  x = np.asarray(x, np.float32)
  mean = x.mean(0)
  if dim >= x.shape[1]:
    return mean, np.eye(x.shape[1], dtype=np.float32)
  fit = x[::fit_every] if x.shape[0] >= 4 * dim * fit_every else x
  # The eigenvectors of the scatter matrix, in float64 (as numpy's SVD computes
  # float32 input): the same components as the SVD of the rows, at half its
  # time for a 1,296-wide block. Each sign is fixed (largest entry positive);
  # a sign never changes a cosine similarity.
  dim = min(dim, fit.shape[0])  # as many as the SVD of the rows would give
  centred = (fit - mean).astype(np.float64)
  _, vectors = np.linalg.eigh(centred.T @ centred)
  components = vectors[:, ::-1][:, :dim]
  largest = np.abs(components).argmax(0)
  components *= np.sign(components[largest, np.arange(dim)])
  return mean, components.astype(np.float32)


def parse_features(spec: str) -> List[Tuple[str, Dict]]:
  """'hog(cell=4, dim=64)|deskew(dim=64)' -> [(name, options)], checked."""
  blocks = augment.parse(spec, what="graph feature")
  if not blocks:
    raise ConfigError(f"no graph features in {spec!r}")
  for name, _ in blocks:
    if name != "encoder":
      FEATURES.get(name)  # unknown names fail here, before any work
  return blocks


@dataclasses.dataclass
class Embedding:
  """Graph features fitted on one set of images (`fit_embedding`) that new
  images go through unchanged: the blocks' feature functions, then each
  block's centring and principal components, then unit length."""
  # (fn(float images) -> [features of the blocks at these positions], positions)
  groups: List[Tuple[Callable, Tuple[int, ...]]]
  projections: List[Tuple[np.ndarray, np.ndarray]]  # (mean, components) per block
  batch_size: int = 5000

  def raw(self, images: np.ndarray) -> List[np.ndarray]:
    """Each block's features before projection, in the spec's order."""
    out = [None] * len(self.projections)
    for fn, positions in self.groups:
      for position, feats in zip(positions, _apply(fn, images, self.batch_size)):
        out[position] = feats
    return out

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return np.concatenate([knn_search.unit((feats - mean) @ components)
                           for feats, (mean, components)
                           in zip(self.raw(images), self.projections)], axis=1)


def _apply(fn, images, batch_size) -> List[np.ndarray]:
  """fn's list of outputs over `images` in batches, each concatenated."""
  outputs = [jax.device_get(fn(jnp.asarray(images[i:i + batch_size], jnp.float32) / 255.0))
             for i in range(0, images.shape[0], batch_size)]
  return [np.concatenate(parts) for parts in zip(*outputs)]


@functools.lru_cache(maxsize=None)
def _jitted_features(blocks: Tuple[Tuple[str, Tuple[Tuple[str, Any], ...]], ...]) -> Callable:
  """One jitted function computing these feature blocks together, kept for
  the process: XLA computes what they share once (the deskewed image and its
  gradients, common to every hog block: default's three blocks 2.6x faster
  on CPU than one function each), and every round's graph and the vote reuse
  its compilation (on a GPU it takes longer than the features themselves)."""
  fns = []
  for name, options in blocks:
    try:
      fns.append(FEATURES.get(name)(**dict(options)))
    except TypeError as e:
      raise ConfigError(f"graph feature {name!r}: {e}") from None
  return jax.jit(lambda images: [fn(images) for fn in fns])


def fit_embedding(images: np.ndarray, spec: str, *, batch_size: int = 5000,
                  extra: Dict[str, Callable] = None) -> Tuple[Embedding, np.ndarray]:
  """Fits the graph features of `spec` on uint8 images [N, H, W, C]; returns
  (the `Embedding`, its features of `images` [N, D]). `spec` is a pipeline
  string of blocks, `name(dim=64, options...)`: each block's features are
  computed in batches, reduced to `dim` principal components and
  L2-normalised, so that every block weighs the same in the cosine
  similarity. `extra` maps further names (e.g. "encoder") to feature
  functions."""
  dims, builtin, groups = [], [], []
  for position, (name, block) in enumerate(parse_features(spec)):
    dims.append(block.pop("dim", 64))
    if name in (extra or {}):
      fn = extra[name]
      groups.append((lambda x, fn=fn: [fn(x)], (position,)))
    else:
      builtin.append(((name, tuple(sorted(block.items()))), position))
  if builtin:
    builtin.sort(key=lambda b: repr(b[0]))  # one program whatever the blocks' order
    try:
      fn = _jitted_features(tuple(key for key, _ in builtin))
    except TypeError:  # an unhashable option value, e.g. a list
      raise ConfigError(f"graph features {spec!r}: options must be numbers, strings or "
                        "booleans") from None
    groups.append((fn, tuple(position for _, position in builtin)))
  embedding = Embedding(groups, [None] * len(dims), batch_size)
  raw = embedding.raw(images)
  embedding.projections = [fit_pca(feats, dim) for feats, dim in zip(raw, dims)]
  return embedding, np.concatenate([
      knn_search.unit((feats - mean) @ components)
      for feats, (mean, components) in zip(raw, embedding.projections)], axis=1)


def embed(images: np.ndarray, spec: str, *, batch_size: int = 5000,
          extra: Dict[str, Callable] = None) -> np.ndarray:
  """The features of `fit_embedding`, fitted on `images` themselves."""
  return fit_embedding(images, spec, batch_size=batch_size, extra=extra)[1]


def knn_graph(features: np.ndarray, k: int, *, chunk: int = 2000):
  """Exact k nearest neighbours by cosine similarity (self excluded):
  (similarities [N, k], indices [N, k]), best first."""
  if not 1 <= k < features.shape[0]:
    raise ConfigError(f"graph: k={k} must be in [1, {features.shape[0]})")
  return knn_search.self_search(features, k, chunk=chunk)


def edge_weights(sims: np.ndarray) -> np.ndarray:
  """Self-tuning Gaussian weights: exp(-d_ij / d_ik), d = 1 - cosine, with
  d_ik the distance to the k-th neighbour (the local scale)."""
  dist = np.maximum(1.0 - sims, 0.0)
  return np.exp(-dist / np.maximum(dist[:, -1:], 1e-6)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("num_classes", "iterations"))
def poisson_learning(neighbors, weights, seeds, seed_labels, *, num_classes: int,
                     iterations: int = 600):
  """Poisson learning on the symmetrised kNN graph W = (A + A^T) / 2.

  Solves L u = b, with b = onehot(label) - mean at the labeled nodes and 0
  elsewhere, by the Jacobi-style iteration of Calder et al. (2020):
  u <- u + D^-1 (b - L u). Returns u [N, num_classes]; argmax is the label.
  """
  n, k = neighbors.shape
  w = weights / 2.0
  degree = (w.sum(1) + jax.ops.segment_sum(w.reshape(-1), neighbors.reshape(-1), n))[:, None]
  onehot = jax.nn.one_hot(seed_labels, num_classes)
  source = jnp.zeros((n, num_classes)).at[seeds].add(onehot - onehot.mean(0))
  # A u as a gather and a sum over each row's k neighbours (no scatter: 25%
  # faster on CPU); A^T u scatters along the edges sorted by target.
  order = jnp.argsort(neighbors.reshape(-1), stable=True)
  sources, targets = order // k, neighbors.reshape(-1)[order]
  w_sorted = w.reshape(-1)[order][:, None]

  def apply_w(u):  # W u with W = (A + A^T) / 2, A[i, neighbors[i, j]] = weights[i, j]
    forward = jnp.einsum("nk,nkc->nc", w, u[neighbors])
    backward = jax.ops.segment_sum(w_sorted * u[sources], targets, n, indices_are_sorted=True)
    return forward + backward

  def body(_, u):
    return u + (source - (degree * u - apply_w(u))) / degree

  return jax.lax.fori_loop(0, iterations, body, jnp.zeros((n, num_classes)))


def size_offsets(scores: np.ndarray, low: np.ndarray, high: np.ndarray,
                 max_rounds: int = 1000) -> np.ndarray:
  """Offsets b [C] such that argmax_c(scores + b) gives each class between
  `low[c]` and `high[c]` rows (where the bounds allow it), the smallest
  moves first: a class below its bound takes the rows that least prefer
  another class, one above gives up its least sure rows. Within the bounds
  nothing moves (b = 0). An auction-like dual ascent of the size-bounded
  assignment (Bertsekas); a round fixes the class furthest out of bounds."""
  n, c = scores.shape
  low = np.clip(np.floor(low), 0, n).astype(int)
  high = np.clip(np.ceil(high), 1, n).astype(int)
  b = np.zeros(c)
  for _ in range(max_rounds):
    shifted = scores + b
    sizes = np.bincount(shifted.argmax(1), minlength=c)
    excess = np.maximum(low - sizes, sizes - high) / np.maximum(low, 1)
    j = int(excess.argmax())
    if excess[j] <= 0:
      break
    others = np.delete(shifted, j, axis=1).max(1)
    gap = np.sort(shifted[:, j] - others)[::-1]  # how much each row prefers j
    if sizes[j] < low[j]:
      b[j] -= gap[low[j] - 1] - 1e-9  # the low[j] rows that prefer j most now pick it
    else:
      b[j] -= gap[high[j] - 1] - (gap[high[j] - 1] - gap[high[j]]) / 2  # keep high[j]
  return b


def standardized_scores(scores: np.ndarray) -> np.ndarray:
  """Each class's column of Poisson scores to zero mean and unit variance
  (their scales differ between classes); a class without a labeled example
  has no source, so its column is flat and gets -inf: 0 after standardising,
  it would win every row the others score below 0."""
  spread = scores.std(0)
  z = (scores - scores.mean(0)) / (spread + 1e-12)
  z[:, spread == 0] = -np.inf
  return z


def confident_labels(scores: np.ndarray, keep: float, sizes=None):
  """Pseudo-labels and a class-balanced confidence mask.

  Poisson scores differ in scale between classes, so each class's column is
  standardised first. The label is the argmax; within each predicted class
  the `keep` fraction with the largest margin (best minus second best) is
  kept. `sizes`: (low [C], high [C]) bounds on each class's number of rows,
  met by per-class offsets (`size_offsets`) before the argmax. Returns
  (labels int32 [N], mask float32 [N]).
  """
  z = standardized_scores(scores)
  if sizes is not None:
    z = z + size_offsets(z, *sizes)
  labels = z.argmax(1)
  top2 = np.sort(z, axis=1)[:, -2:]
  margin = top2[:, 1] - top2[:, 0]
  mask = np.zeros(len(z), np.float32)
  for c in range(z.shape[1]):
    members = np.flatnonzero(labels == c)
    ranked = members[np.argsort(-margin[members], kind="stable")]
    mask[ranked[:int(round(keep * members.size))]] = 1.0
  return labels.astype(np.int32), mask


def _sweep_cut(sub, degree, order_key, max_size: int, min_size: int):
  """The node positions of the prefix of the nodes sorted by `order_key`
  with the lowest conductance in the graph `sub` (sizes in [min_size,
  max_size]), and that conductance. All prefixes at once: an edge is cut by
  every prefix that holds one of its ends but not the other."""
  order = np.argsort(order_key, kind="stable")
  m = order.size
  position = np.empty(m, np.int64)
  position[order] = np.arange(m)
  edges = sub.tocoo()
  upper = edges.row < edges.col
  a, b = position[edges.row[upper]], position[edges.col[upper]]
  change = np.zeros(m + 1)
  np.add.at(change, np.minimum(a, b), edges.data[upper])
  np.add.at(change, np.maximum(a, b), -edges.data[upper])
  cut = np.cumsum(change)[:m]
  volume = np.cumsum(degree[order])
  conductance = cut / np.maximum(np.minimum(volume, degree.sum() - volume), 1e-12)
  conductance[:min_size - 1] = np.inf
  conductance[max_size:] = np.inf
  best = int(np.argmin(conductance))
  return order[:best + 1], float(conductance[best])


def _spectral_orderings(sub, eigenvectors: int):
  """(degrees, node orderings) of graph `sub`: each of the top `eigenvectors`
  non-trivial eigenvectors of its normalised adjacency, with both signs, as
  a key to sort its nodes by for a sweep cut."""
  degree = np.asarray(sub.sum(1)).ravel() + 1e-12
  scale = scipy.sparse.diags(1.0 / np.sqrt(degree))
  values, vectors = scipy.sparse.linalg.eigsh(
      scale @ sub @ scale, k=eigenvectors + 1, which="LA", tol=1e-4,
      # A fixed start vector: the same orderings on every run.
      v0=np.random.default_rng(0).standard_normal(sub.shape[0]))
  # The top eigenvector is the trivial one (sqrt of the degrees).
  return degree, [sign * vectors[:, j] / np.sqrt(degree)
                  for j in np.argsort(-values)[1:] for sign in (1, -1)]


def _symmetric_adjacency(neighbors: np.ndarray, weights: np.ndarray):
  """W = (A + A^T) / 2 of a kNN graph, as a scipy CSR matrix."""
  n, k = neighbors.shape
  adjacency = scipy.sparse.coo_matrix(
      (np.asarray(weights, np.float64).ravel(), (np.repeat(np.arange(n), k),
                                                 np.asarray(neighbors).ravel())), shape=(n, n))
  return ((adjacency + adjacency.T) / 2).tocsr()


def _lowest_conductance_split(sub, eigenvectors: int, min_size: int, max_size: int):
  """A boolean mask of the nodes of graph `sub` on one side of its lowest-
  conductance sweep cut over the top non-trivial eigenvectors of the
  normalised adjacency (both signs of each), and that conductance."""
  degree, keys = _spectral_orderings(sub, eigenvectors)
  best, best_conductance = None, np.inf
  for key in keys:
    nodes, conductance = _sweep_cut(sub, degree, key, max_size, min_size)
    if conductance < best_conductance:
      best, best_conductance = nodes, conductance
  side = np.zeros(sub.shape[0], bool)
  side[best] = True
  return side, best_conductance


def reseed_vanished(neighbors: np.ndarray, weights: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, labeled: np.ndarray, expected: np.ndarray, *,
                    low: float = 0.5, high: float = 1.5, eigenvectors: int = 4,
                    min_fraction: float = 0.2, max_fraction: float = 0.8,
                    ratio: float = 2.0):
  """Gives a class that vanished the cluster it lost.

  When one labeled example is atypical (a thin 4 that sits among the 9s),
  Poisson learning hands its class's images to a neighbour class, which then
  holds two clusters and about twice its share. For each class a below `low`
  times its `expected` share (fewest first), the donor b is the class above
  `high` times its share whose nodes' standardised scores for a are highest
  on average; b's nodes are split in two along the lowest-conductance sweep
  cut of their sub-graph (`eigenvectors` non-trivial eigenvectors, each side
  between `min_fraction` and `max_fraction` of them), and the side without
  b's labeled nodes becomes a, if its mean score for a is the higher one
  (otherwise the split is not a's cluster and nothing moves). Then the few
  unlabeled nodes a held before are asked whether they belong with that
  cluster: they were a's only because they sit around its atypical labeled
  example (the thin 4 among upright 1s), so when their edge weight to one
  other class exceeds `ratio` times their weight to the moved side, they go
  to that class. Labeled nodes keep their labels. Reads no hidden label:
  only the graph, the scores, the labeled nodes and the shares they imply.

  `scores` [N, C]: Poisson scores of every node; `labels` [N]: the current
  labels (labeled nodes included); `labeled` [N] bool. Returns (labels int32
  [N], [(a, b, nodes moved, conductance, a's former nodes reassigned, the
  class they went to or -1), ...]).
  """
  labels = np.asarray(labels, np.int32).copy()
  labeled = np.asarray(labeled, bool)
  n, num_classes = scores.shape
  z = standardized_scores(scores)
  adjacency = None
  moves = []
  for a in np.argsort(np.bincount(labels, minlength=num_classes) / n - expected, kind="stable"):
    share = np.bincount(labels, minlength=num_classes) / n
    if expected[a] <= 0 or share[a] >= low * expected[a]:
      continue
    donors = [c for c in range(num_classes) if c != a and share[c] > high * expected[c]]
    if not donors:
      continue
    b = max(donors, key=lambda c: z[labels == c, a].mean())
    members = np.flatnonzero(labels == b)
    if members.size < 4 * (eigenvectors + 2):
      continue
    if adjacency is None:
      adjacency = _symmetric_adjacency(neighbors, weights)
    side, conductance = _lowest_conductance_split(
        adjacency[members][:, members], eigenvectors, int(min_fraction * members.size),
        int(max_fraction * members.size))
    if labeled[members[side]].any():
      side = ~side
    if labeled[members[side]].any() or z[members[side], a].mean() <= z[members[~side], a].mean():
      continue
    nodes = members[side]
    former = np.flatnonzero((labels == a) & ~labeled)
    labels[nodes] = a
    to, reassigned = -1, 0
    if former.size:
      rows = adjacency[former]
      others = [c for c in range(num_classes) if c != a]
      outside = np.asarray([rows[:, np.flatnonzero(labels == c)].sum() for c in others])
      if outside.max() > ratio * rows[:, nodes].sum():
        to, reassigned = int(others[int(outside.argmax())]), int(former.size)
        labels[former] = to
    moves.append((int(a), int(b), int(nodes.size), conductance, reassigned, to))
  return labels, moves


def refine_labels(neighbors: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                  fixed: np.ndarray, *, num_classes: int, ratio: float = 2.0,
                  eigenvectors: int = 6, max_fraction: float = 0.3, min_size: int = 20,
                  rounds: int = 3):
  """Moves whole sub-communities of a class to the class their edges favour.

  Poisson learning decides node by node from potentials that spread out of
  one labeled node per class; a tight group of images of one sub-style (9s
  with a hooked tail) can end up in the class whose source is nearer (3)
  even when most of the group's outside edges lead to its own class. Node by
  node that cannot be undone: each member's neighbours are mostly the group
  itself. So, in the symmetrised graph W = (A + A^T) / 2 restricted to each
  predicted class, the top `eigenvectors` non-trivial eigenvectors of the
  normalised adjacency give orderings of its nodes; the lowest-conductance
  prefix of each ordering (a sweep cut, between `min_size` nodes and
  `max_fraction` of the class) is a candidate group, and it moves to class
  c' when its edge weight to c' outside the group exceeds `ratio` times its
  weight to the rest of its own class. Groups holding a `fixed` (labeled)
  node or a node moved before are left alone; at most one group moves per
  class per round, and the class is rebuilt for the next.

  `ratio` 2.0 is `default`'s; how it was chosen, and what it gains:
  docs/default_recipe.md.

  Returns the new labels int32 [N] and the number of groups moved.
  """
  n = neighbors.shape[0]
  adjacency = _symmetric_adjacency(neighbors, weights)
  labels = np.asarray(labels, np.int32).copy()
  fixed = np.asarray(fixed, bool)
  moved = np.zeros(n, bool)
  num_moved = 0
  for _ in range(rounds):
    moved_this_round = 0
    for c in range(num_classes):
      members = np.flatnonzero(labels == c)
      if members.size < 2 * min_size or members.size <= eigenvectors + 2:
        continue
      sub = adjacency[members][:, members]
      degree, candidates = _spectral_orderings(sub, eigenvectors)
      for key in candidates:
        nodes = members[_sweep_cut(sub, degree, key, int(max_fraction * members.size),
                                   min_size)[0]]
        if fixed[nodes].any() or moved[nodes].any():
          continue
        outside = adjacency[nodes].tocoo()
        leaves = ~np.isin(outside.col, nodes)
        to_class = np.bincount(labels[outside.col[leaves]], weights=outside.data[leaves],
                               minlength=num_classes)
        target = int(to_class.argmax())
        if target != c and to_class[target] > ratio * to_class[c]:
          labels[nodes] = target
          moved[nodes] = True
          moved_this_round += 1
          break  # this class changed: the next round rebuilds it
    num_moved += moved_this_round
    if not moved_this_round:
      break
  return labels, num_moved


def weighted_knn_graph(features: np.ndarray, k: int):
  """The graph Poisson learning runs on: each row's k nearest neighbours
  (`knn_graph`) and their self-tuning weights (`edge_weights`), [N, k] each."""
  sims, neighbors = knn_graph(features, k)
  return neighbors, edge_weights(sims)


def poisson_scores(neighbors: np.ndarray, weights: np.ndarray, seeds: np.ndarray,
                   seed_labels: np.ndarray, *, num_classes: int,
                   iterations: int = 600) -> np.ndarray:
  """Poisson scores [N, num_classes] on a `weighted_knn_graph`, from the
  labels of the rows `seeds`."""
  return np.asarray(poisson_learning(
      jnp.asarray(neighbors), jnp.asarray(weights), jnp.asarray(seeds),
      jnp.asarray(seed_labels), num_classes=num_classes, iterations=iterations))


def knn_vote(queries: np.ndarray, memory: np.ndarray, memory_labels: np.ndarray, *,
             k: int, num_classes: int, chunk: int = 1000) -> np.ndarray:
  """Each query row's class vote [N, num_classes] (rows sum to 1) among its k
  nearest `memory` rows by cosine similarity, weighted like the graph's
  edges (`edge_weights`): the graph's labels carried to new images, one
  image at a time (inductive: the queries never join the graph)."""
  if not 1 <= k <= memory.shape[0]:
    raise ConfigError(f"graph vote: k={k} must be in [1, {memory.shape[0]}]")
  sims, idx = knn_search.search(queries, memory, k, chunk=chunk)
  n = queries.shape[0]
  weights = edge_weights(sims)
  votes = np.zeros((n, num_classes), np.float32)
  np.add.at(votes, (np.repeat(np.arange(n), k), np.asarray(memory_labels)[idx].ravel()),
            weights.ravel())
  return votes / votes.sum(1, keepdims=True)
