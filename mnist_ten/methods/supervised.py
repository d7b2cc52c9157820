"""Supervised baseline: cross-entropy on augmented labeled examples only."""
from mnist_ten import losses
from mnist_ten.methods import METHODS, Method


@METHODS.register("supervised")
class Supervised(Method):

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.labeled_batch_size = config.batch_size
    self.augment = ctx.augmenter(config.augment.labeled)

  def loss(self, params, *, forward, labeled, unlabeled, rng, step, state):
    logits, batch_stats = forward(params, self.augment(rng, labeled.images))
    loss = losses.cross_entropy(logits, labeled.labels,
                                label_smoothing=self.config.label_smoothing)
    return loss, {"loss/supervised": loss,
                  "train/accuracy": losses.accuracy(logits, labeled.labels)}, batch_stats, state

  def views(self, rng, labeled_images, unlabeled_images):
    return {"labeled": self.augment(rng, labeled_images)}
