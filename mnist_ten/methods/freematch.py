"""FreeMatch (Wang et al., ICLR 2023): FixMatch with a self-adaptive
threshold, global and per class, and a self-adaptive fairness term.

Three exponential moving averages (momentum m = `freematch.momentum`,
0.999) of the weak view's predictions on unlabeled batches, all starting at
1/C: the global confidence tau (the batch's mean max probability), the class
distribution p~ (the batch's mean probability vector) and the histogram h
of its hard predictions. An image's pseudo-label (its argmax c) counts when
its confidence reaches tau * p~_c / max(p~). The self-adaptive fairness
term, minimised with weight w_f = `freematch.fairness`, is
    sum_c t_c log pbar_c,  t = normalise(p~ / h),  pbar = normalise(pbar' / h_s),
pbar' and h_s the strong view's mean prediction and hard-label histogram over
the confident images (the scalers 1/h and 1/h_s without gradient): minus the
cross-entropy from t to pbar (the paper's -H): minimising it pushes the
strong view's normalised mean prediction away from t, an entropy
maximisation that keeps the confident predictions diverse (USB's maintainers
confirm the sign, microsoft/Semi-supervised-learning#182). w_f = 0.001 as in USB's classic-CV configs (its
argparse default is 0.01).

As USB (semilearn/algorithms/freematch/): the averages are updated with this
batch first, then the mask is computed from them; the fairness term is 0
when no image passes. Where ours differs, and why:
- The unlabeled loss, fairness term included, is weighted by lambda_u
  (1 and not ramped in configs/freematch.py, as USB), so with its defaults
  the objective is USB's.
- USB's `use_quantile` and `clip_thresh` options (off in its configs) are
  not built.
- The momentum 0.999 is the paper's and USB's, for runs of 2^20 steps; a
  run here is 2,000 (0.999^2000 = 0.14), so the averages still carry about
  a seventh of their initial 1/C at the end, and the thresholds spend much
  of the run low. `freematch.momentum` sets it.
- Alignment (`fixmatch.align`) is FixMatch's option and off, as in the paper.
"""
import jax
import jax.numpy as jnp

from mnist_ten import losses
from mnist_ten.methods import METHODS
from mnist_ten.methods.fixmatch import FixMatch


def initial(num_classes: int):
  uniform = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)
  return {"tau": jnp.asarray(1.0 / num_classes, jnp.float32), "p_model": uniform,
          "label_hist": uniform}


def update(stats, probs, momentum: float):
  """The three averages after this batch's weak-view probabilities."""
  num_classes = probs.shape[-1]
  ema = lambda old, new: momentum * old + (1.0 - momentum) * new  # pylint: disable=unnecessary-lambda-assignment
  hist = jnp.bincount(probs.argmax(-1), length=num_classes) / probs.shape[0]
  return {"tau": ema(stats["tau"], probs.max(-1).mean()),
          "p_model": ema(stats["p_model"], probs.mean(0)),
          "label_hist": ema(stats["label_hist"], hist)}


def class_thresholds(stats):
  """tau * p~_c / max(p~): the confidence a pseudo-label of class c needs."""
  return stats["tau"] * stats["p_model"] / stats["p_model"].max()


def _normalise_by(probs, counts):
  # 1 / 0 -> 0, as USB's nan_to_num: a class with no hard label drops out.
  scaled = probs * jax.lax.stop_gradient(jnp.where(counts > 0, 1.0 / jnp.where(
      counts > 0, counts, 1.0), 0.0))
  return scaled / jnp.maximum(scaled.sum(), 1e-12)


def fairness(logits_strong, mask, stats):
  """USB's entropy_loss: sum_c normalise(p~/h)_c * log normalise(pbar/hist_s)_c
  over the masked images (0 when none), minimised (it is minus a
  cross-entropy between the two normalised distributions)."""
  num_classes = logits_strong.shape[-1]
  probs = jax.nn.softmax(logits_strong)
  count = mask.sum()
  hist = jnp.zeros(num_classes).at[probs.argmax(-1)].add(mask) / jnp.maximum(count, 1.0)
  mean_probs = (probs * mask[:, None]).sum(0) / jnp.maximum(count, 1.0)
  target = jax.lax.stop_gradient(_normalise_by(stats["p_model"], stats["label_hist"]))
  value = jnp.sum(target * jnp.log(_normalise_by(mean_probs, hist) + 1e-12))
  return jnp.where(count > 0, value, 0.0)


@METHODS.register("freematch")
class FreeMatch(FixMatch):
  # config.freematch as USB's classic-CV configs: EMA momentum 0.999, fairness weight 0.001.
  OPTIONS = {"momentum": 0.999, "fairness": 0.001}

  def init_state(self, num_unlabeled):
    return {"stats": initial(self.ctx.num_classes), "align": super().init_state(num_unlabeled)}

  def unlabeled_term(self, logits_weak, logits_strong, *, labeled, unlabeled, state, step):
    del unlabeled, step
    free = self.config.freematch
    probs, align = self.weak_probs(logits_weak, labeled, state["align"])
    stats = update(state["stats"], probs, free.momentum)
    thresholds = class_thresholds(stats)
    pseudo = probs.argmax(-1)
    mask = (probs.max(-1) >= thresholds[pseudo]).astype(jnp.float32)
    consistency = losses.masked_consistency(logits_strong, pseudo, mask)
    fair = fairness(logits_strong, mask, stats)
    metrics = {"loss/consistency": consistency, "loss/fairness": fair,
               "threshold/global": stats["tau"], "threshold/min": thresholds.min(),
               **losses.per_class("threshold", thresholds),
               **losses.per_class("class_distribution", stats["p_model"])}
    return (consistency + free.fairness * fair, pseudo, mask, metrics,
            {"stats": stats, "align": align})
