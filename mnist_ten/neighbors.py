"""Exact nearest-neighbour search, the one implementation behind the `knn`
baseline, the `knn` evaluator and the graph (its kNN graph and its vote).

Three entry points: `knn_predict` runs inside a jit-compiled function (a
majority vote of the k nearest rows by L2 distance), `search` serves large
databases from the host, one chunk of queries at a time on the device, and
`self_search` finds each row's neighbours among the other rows (the graph).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def unit(x):
  """Rows scaled to unit length (numpy): on unit vectors the L2-nearest row
  is the cosine-nearest one."""
  return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def unit_jnp(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def knn_predict(train_x, train_y, query_x, *, k: int = 1, num_classes: int):
  """Majority vote of the k nearest train points (L2), ties to the nearest."""
  train_x = train_x.reshape((train_x.shape[0], -1)).astype(jnp.float32)
  query_x = query_x.reshape((query_x.shape[0], -1)).astype(jnp.float32)
  d2 = (jnp.sum(query_x ** 2, 1, keepdims=True) - 2 * query_x @ train_x.T
        + jnp.sum(train_x ** 2, 1)[None])
  _, nearest = jax.lax.top_k(-d2, k)
  # Votes weighted 1 + tiny rank bonus so that ties go to the closest class.
  weights = 1.0 + 1e-3 * (k - jnp.arange(k)) / k
  votes = jax.nn.one_hot(train_y[nearest], num_classes) * weights[None, :, None]
  return jnp.argmax(votes.sum(1), -1)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(block, database, *, k: int):
  # The database is an argument, not a constant closed over: one compilation
  # serves every chunk, every call of the same shapes and every round.
  return jax.lax.top_k(block @ database.T, k)


def search(queries: np.ndarray, database: np.ndarray, k: int, *, chunk: int):
  """Each query row's k most cosine-similar `database` rows: (similarities
  [N, k], indices [N, k]), best first. Exact, one chunk of queries at a time
  on device, the queries padded to whole chunks so that one compilation serves
  every chunk. A database searched for its own rows: `self_search`."""
  n = queries.shape[0]
  database = jnp.asarray(unit(np.asarray(database, np.float32)))
  queries = unit(np.asarray(queries, np.float32))
  queries = np.concatenate([queries, np.zeros((-n % chunk, queries.shape[1]), np.float32)])
  sims, idx = zip(*[jax.device_get(_top_k(jnp.asarray(queries[i:i + chunk]), database, k=k))
                    for i in range(0, queries.shape[0], chunk)])
  return np.concatenate(sims)[:n], np.concatenate(idx)[:n]


@functools.partial(jax.jit, static_argnames=("k", "chunk", "n"))
def _self_top_k(rows, *, k: int, chunk: int, n: int):
  """`self_search` on unit rows padded to whole chunks ([B * chunk, D], the
  first n real), as one program: a loop over the blocks of the similarity
  matrix on or above its diagonal, each block computed once and merged into
  the running k best of both its row block and (transposed) its column
  block. Column blocks reach each row in increasing order, so ties keep the
  lower index, as one top_k over the whole row would."""
  num_blocks = rows.shape[0] // chunk
  blocks = rows.reshape(num_blocks, chunk, -1)
  pair_i, pair_j = (jnp.asarray(a, jnp.int32) for a in np.triu_indices(num_blocks))
  offsets = jnp.arange(chunk)

  def merge(best, block, sims, ids):
    values, indices = best
    candidates = jnp.concatenate([values[block], sims], 1)
    candidate_ids = jnp.concatenate([indices[block], jnp.broadcast_to(ids, sims.shape)], 1)
    top, pos = jax.lax.top_k(candidates, k)
    return (values.at[block].set(top),
            indices.at[block].set(jnp.take_along_axis(candidate_ids, pos, 1)))

  def body(p, best):
    i, j = pair_i[p], pair_j[p]
    row_ids, col_ids = i * chunk + offsets, j * chunk + offsets
    sims = blocks[i] @ blocks[j].T
    # Explicitly, no row is its own neighbour (duplicated images would make the
    # first neighbour ambiguous), and padding is no one's.
    sims = jnp.where((row_ids[:, None] == col_ids[None, :]) | (row_ids[:, None] >= n)
                     | (col_ids[None, :] >= n), -jnp.inf, sims)
    best = merge(best, i, sims, col_ids[None, :])
    # A diagonal block is its own transpose: merged once.
    return jax.lax.cond(i == j, lambda: best, lambda: merge(best, j, sims.T, row_ids[None, :]))

  best = (jnp.full((num_blocks, chunk, k), -jnp.inf), jnp.zeros((num_blocks, chunk, k), jnp.int32))
  values, indices = jax.lax.fori_loop(0, pair_i.shape[0], body, best)
  return values.reshape(-1, k)[:n], indices.reshape(-1, k)[:n]


def self_search(database: np.ndarray, k: int, *, chunk: int):
  """Each row's k most cosine-similar other rows of `database`: (similarities
  [N, k], indices [N, k]), best first. Exact; the similarity matrix is
  symmetric, so each block of it is computed once for both of its sides (half
  `search`'s multiply-adds), in one program on the device with no round trip
  to the host per block."""
  n = database.shape[0]
  rows = unit(np.asarray(database, np.float32))
  rows = np.concatenate([rows, np.zeros((-n % chunk, rows.shape[1]), np.float32)])
  return jax.device_get(_self_top_k(jnp.asarray(rows), k=k, chunk=chunk, n=n))
