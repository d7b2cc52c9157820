"""Loss pieces shared by methods, each a pure function over logits or probabilities."""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, *, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy against integer labels, with optional smoothing."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)
