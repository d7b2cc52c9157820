"""Loss pieces shared by methods, each a pure function over logits or probabilities."""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, *, label_smoothing: float = 0.0, reduction: str = "mean"):
  """Softmax cross-entropy against integer labels, with optional smoothing;
  the mean, or per example with reduction="none"."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  per_example = optax.softmax_cross_entropy(logits, targets)
  return per_example.mean() if reduction == "mean" else per_example


def soft_cross_entropy(logits, targets):
  """Per-example cross-entropy against probability targets."""
  return optax.softmax_cross_entropy(logits, targets)


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def sharpen(probs, temperature: float):
  """MixMatch's sharpening: p^(1/T), renormalised; T -> 0 gives one-hot."""
  p = probs ** (1.0 / temperature)
  return p / p.sum(-1, keepdims=True)


def class_distribution(labels, num_classes: int):
  """The share of each class among `labels`: the target p(y) that
  distribution alignment moves the model's guesses toward."""
  return jnp.bincount(labels, length=num_classes) / labels.shape[0]


def distribution_alignment(probs, target, predicted=None):
  """ReMixMatch's distribution alignment: probs * target / predicted,
  renormalised per example. `predicted` (the model's class marginal on
  unlabeled data) defaults to the mean of `probs` over the batch."""
  if predicted is None:
    predicted = probs.mean(0)
  aligned = probs * target / jnp.clip(predicted, 1e-6)
  return aligned / aligned.sum(-1, keepdims=True)


def marginal_queue(num_classes: int, length: int):
  """The state of ReMixMatch's running model marginal: the mean predictions of
  the last `length` unlabeled batches (ring buffer) and how many were seen."""
  return {"means": jnp.zeros((length, num_classes), jnp.float32),
          "count": jnp.zeros((), jnp.int32)}


def update_marginal(queue, probs):
  """Puts this batch's mean prediction into the queue (as USB's
  DistAlignQueueHook, the batch enters before it is aligned) and returns
  (new queue, the mean over the batches in it). Length 1: this batch's mean."""
  length = queue["means"].shape[0]
  means = queue["means"].at[queue["count"] % length].set(probs.mean(0))
  count = queue["count"] + 1
  filled = jnp.minimum(count, length)  # rows are filled in order: the first `filled`
  held = (jnp.arange(length) < filled)[:, None]
  return {"means": means, "count": count}, jnp.sum(means * held, 0) / filled


def per_class(name: str, values, limit: int = 20) -> dict:
  """{name/cK: values[K]}: a per-class quantity as metrics (TensorBoard only,
  not the console), for up to `limit` classes."""
  if values.shape[-1] > limit:
    return {}
  return {f"{name}/c{k}": values[k] for k in range(values.shape[-1])}


def confident_pseudo_labels(logits, threshold: float, prior=None, predicted=None):
  """FixMatch's hard pseudo-labels: (argmax, mask of max prob >= threshold),
  both without gradient. With a class `prior`, the probabilities are first
  aligned to it (`distribution_alignment`, with the model's marginal
  `predicted`, by default the batch's mean)."""
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits))
  if prior is not None:
    probs = distribution_alignment(probs, prior, predicted)
  return probs.argmax(-1), (probs.max(-1) >= threshold).astype(jnp.float32)


def masked_consistency(logits_strong, pseudo, mask):
  """Cross-entropy of the strong view against hard pseudo-labels, weighted by
  `mask` (0/1 or soft) and averaged over the whole batch, as the official
  FixMatch and USB do (masked-out examples count as zero)."""
  return jnp.mean(cross_entropy(logits_strong, pseudo, reduction="none") * mask)


def confident_consistency(logits_weak, logits_strong, threshold: float, prior=None,
                          predicted=None):
  """FixMatch's unlabeled term: `masked_consistency` on the weak view's
  confident hard pseudo-labels (no gradient through them).
  Returns (loss, pseudo-labels, mask)."""
  pseudo, mask = confident_pseudo_labels(logits_weak, threshold, prior, predicted)
  return masked_consistency(logits_strong, pseudo, mask), pseudo, mask


def mixup_lambda(key, alpha: float, n: int):
  """MixMatch's mixing weights: lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha)."""
  lam = jax.random.beta(key, alpha, alpha, (n,))
  return jnp.maximum(lam, 1.0 - lam)


def mixup(key, x, y, alpha: float):
  """Mixes each example with a random partner of the same batch (MixMatch's
  variant: lambda' = max(lambda, 1 - lambda) keeps each mix closer to its own
  example). Returns (mixed x, mixed y)."""
  k_lam, k_perm = jax.random.split(key)
  lam = mixup_lambda(k_lam, alpha, x.shape[0])
  perm = jax.random.permutation(k_perm, x.shape[0])
  lx = lam.reshape((-1,) + (1,) * (x.ndim - 1))
  ly = lam.reshape((-1,) + (1,) * (y.ndim - 1))
  return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


def nt_xent(z1, z2, temperature: float):
  """SimCLR's normalised-temperature cross-entropy over 2N views: each view's
  positive is its partner, the other 2N - 2 views are negatives."""
  z = jnp.concatenate([z1, z2])
  z = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-12)
  sim = z @ z.T / temperature
  n = z1.shape[0]
  sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, sim)
  positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  return optax.softmax_cross_entropy_with_integer_labels(sim, positives).mean()


def top_class_share(labels, weights, num_classes: int):
  """The largest share of (weighted) `labels` that one class takes: 1/num_classes
  when balanced, 1 when collapsed into one class; 0 when all weights are 0.
  A label-free sign of collapse."""
  if weights is None:
    weights = jnp.ones(labels.shape, jnp.float32)
  counts = jnp.zeros(num_classes).at[labels].add(weights)
  return counts.max() / jnp.maximum(weights.sum(), 1e-12)


def linear_rampup(step, length: int):
  """0 -> 1 linearly over `length` steps, then 1 (1 at once when length is 0)."""
  if not length:
    return jnp.ones(())
  return jnp.clip(step / length, 0.0, 1.0)


def entropy(probs):
  """Per-example entropy in nats."""
  return -jnp.sum(probs * jnp.log(probs.clip(1e-12)), -1)
