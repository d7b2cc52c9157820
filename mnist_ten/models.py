"""Flax models, chosen by `config.model.name`; the other `config.model` fields
are the encoder's keyword arguments.

Every model is a `Classifier`: an `encoder` (images -> feature vectors), a
linear `head` (features -> logits) and, when a method asks for one, an
`aux_head` (a pretext classifier, a contrastive projection). Parameters sit
under `encoder/`, `head/` and `aux_head/`, so methods can pretrain an encoder,
freeze it, or swap heads. Inputs are NHWC floats in [0, 1].
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_ten import datasets
from mnist_ten import layers
from mnist_ten.errors import ConfigError
from mnist_ten.registry import Registry

MODELS: Registry = Registry("model")


class MLPHead(nn.Module):
  """Dense layers with ReLU between them (not after the last)."""
  widths: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.widths):
      x = nn.Dense(width)(x)
      if i < len(self.widths) - 1:
        x = nn.relu(x)
    return x


class Classifier(nn.Module):
  """encoder -> features -> {head: logits, aux_head: auxiliary outputs}.

  `frozen_encoder` keeps the encoder in inference mode (batch-norm running
  statistics, no updates) and blocks its gradient: a linear probe.
  """
  encoder: nn.Module
  num_classes: int
  aux_widths: Sequence[int] = ()
  frozen_encoder: bool = False
  standardize: Sequence[float] = ()  # (mean, std) of the train pixels, when inputs are standardised

  def setup(self):
    self.head = nn.Dense(self.num_classes)
    self.aux_head = MLPHead(tuple(self.aux_widths)) if self.aux_widths else None

  def __call__(self, x, train: bool = False, output: str = "logits"):
    if self.standardize:  # inside the model: whoever loads it feeds [0, 1] pixels as ever
      x = (x - self.standardize[0]) / self.standardize[1]
    features = self.encoder(x, train=train and not self.frozen_encoder)
    if self.frozen_encoder:
      features = jax.lax.stop_gradient(features)
    # Every head runs (they are tiny next to the encoder) so that init creates
    # all parameters whatever the output asked for.
    outputs = {"features": features, "logits": self.head(features)}
    if self.aux_head is not None:
      outputs["aux"] = self.aux_head(features)
    return outputs if output == "all" else outputs[output]


class MLP(nn.Module):
  widths: Sequence[int] = (512, 512)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    for width in self.widths:
      x = nn.relu(nn.Dense(width)(x))
    return x


class SmallCNN(nn.Module):
  """conv16 5x5, max-pool, conv32 7x7, max-pool; the linear head follows."""
  channels: Sequence[int] = (16, 32)
  kernels: Sequence[int] = (5, 7)
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for c, k in zip(self.channels, self.kernels):
      x = nn.relu(layers.Conv(c, (k, k), kernel_grad=self.kernel_grad)(x))
      x = layers.max_pool(x)
    return x.reshape((x.shape[0], -1))


class LeNet(nn.Module):
  """conv32 5x5, [BN], pool, conv64 5x5, [BN], pool, dense 128: the LeNet-sized
  CNN that USB and the speed benchmarks use (channels=(20, 50), width=500,
  no BN: Ilse et al.'s instance encoder)."""
  batch_norm: bool = True
  width: int = 128
  kernel_grad: str = "auto"
  channels: Sequence[int] = (32, 64)

  @nn.compact
  def __call__(self, x, train: bool = False):
    for c in self.channels:
      x = layers.Conv(c, (5, 5), use_bias=not self.batch_norm, kernel_grad=self.kernel_grad)(x)
      if self.batch_norm:
        x = layers.BatchNorm(use_running_average=not train, momentum=0.99)(x)
      x = layers.max_pool(nn.relu(x))
    return nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))


POOLINGS: Registry = Registry("MIL pooling")


class AttentionPool(nn.Module):
  """Ilse et al. 2018, eq. 8 (gated: eq. 9): a = softmax_k(w^T tanh(V h_k)
  [* sigm(U h_k)]) over a bag's instances, z = sum_k a_k h_k. The weights
  are sown as `intermediates/.../attention` [B, L] (0 at padding)."""
  hidden: int = 128
  gated: bool = False

  @nn.compact
  def __call__(self, h, mask):
    score = jnp.tanh(nn.Dense(self.hidden, name="V")(h))
    if self.gated:
      score = score * nn.sigmoid(nn.Dense(self.hidden, name="U")(h))
    score = nn.Dense(1, name="w")(score)[..., 0]
    # Finite: an all-padding bag (the evaluator's padding rows) gets no NaN.
    weights = jax.nn.softmax(jnp.where(mask, score, -1e30), axis=-1) * mask
    self.sow("intermediates", "attention", weights)
    return jnp.einsum("bl,bld->bd", weights, h)


@POOLINGS.register("attention")
def attention_pool(hidden=128):
  return AttentionPool(hidden, gated=False)


@POOLINGS.register("gated")
def gated_pool(hidden=128):
  return AttentionPool(hidden, gated=True)


class MaskedPool(nn.Module):
  reduce: str

  def __call__(self, h, mask):
    if self.reduce == "max":  # the embedding-level max of Ilse et al.'s baselines
      top = jnp.max(jnp.where(mask[..., None], h, -jnp.inf), axis=1)
      return jnp.where(mask.any(1, keepdims=True), top, 0.0)
    count = jnp.maximum(mask.sum(1, keepdims=True), 1)
    return (h * mask[..., None]).sum(1) / count


@POOLINGS.register("max")
def max_pool(hidden=128):
  del hidden
  return MaskedPool("max")


@POOLINGS.register("mean")
def mean_pool(hidden=128):
  del hidden
  return MaskedPool("mean")


class BagEncoder(nn.Module):
  """Multiple-instance learning: packed bags [B, L, H, W, C + 1]
  (`datasets.pack_bags`) -> each instance through `instance`, then the
  masked `pooling` over the bag -> one feature vector per bag. All bags of a
  batch run as one [B * L] batch: no loop over bags. `freeze_instance` keeps
  a pretrained instance encoder as it is (inference mode, no gradient)."""
  instance: nn.Module
  pooling: nn.Module
  freeze_instance: bool = False

  def __call__(self, x, train: bool = False):
    instances, mask = datasets.unpack_bags(x)
    b, l = mask.shape
    h = self.instance(instances.reshape((b * l,) + instances.shape[2:]),
                      train=train and not self.freeze_instance)
    if self.freeze_instance:
      h = jax.lax.stop_gradient(h)
    if isinstance(self.instance, Classifier):
      h = jax.nn.softmax(h)  # a pretrained classifier's class probabilities per instance
    return self.pooling(h.reshape((b, l, -1)), mask)


def bag_outputs(model: nn.Module, variables, bags):
  """A bag model's (logits [B, C], attention weights [B, L] or None when its
  pooling has none: max, mean) for float bags, from one forward pass."""
  logits, state = model.apply(variables, bags, train=False, mutable=["intermediates"])
  found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
           if "attention" in jax.tree_util.keystr(path)]
  return logits, (found[0] if found else None)


def _norm(kind: str, train: bool, name=None, zero_scale: bool = False):
  """Normalisation layer by name. Batch norm needs batch statistics that
  resemble test data; with a handful of labeled images they do not, and
  group norm (no running statistics) is the safer choice."""
  scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
  if kind == "batch":
    return layers.BatchNorm(use_running_average=not train, momentum=0.99,
                            scale_init=scale_init, name=name)
  if kind == "group":
    return nn.GroupNorm(num_groups=None, group_size=8, scale_init=scale_init, name=name)
  if kind == "layer":
    return nn.LayerNorm(scale_init=scale_init, name=name)
  raise ConfigError(f"unknown norm {kind!r}; known: batch, group, layer")


class ResidualBlock(nn.Module):
  width: int
  stride: int = 1
  norm: str = "batch"
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(layers.Conv, use_bias=False, kernel_grad=self.kernel_grad)
    y = nn.relu(_norm(self.norm, train)(conv(self.width, (3, 3), strides=self.stride)(x)))
    # Zero-init the last scale so each block starts as the identity (Goyal et
    # al. 2017): deep nets then train from step 0 like shallow ones.
    y = _norm(self.norm, train, zero_scale=True)(conv(self.width, (3, 3))(y))
    if x.shape[-1] != self.width or self.stride != 1:
      x = _norm(self.norm, train, name="shortcut_norm")(
          conv(self.width, (1, 1), strides=self.stride, name="shortcut")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A small residual CNN for 28x28 inputs: a 3x3 stem, then one stage per
  width (stride 2 between stages), global average pooling."""
  widths: Sequence[int] = (16, 32, 64)
  blocks: int = 1
  norm: str = "batch"
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.Conv(self.widths[0], (3, 3), use_bias=False, kernel_grad=self.kernel_grad)(x)
    x = nn.relu(_norm(self.norm, train)(x))
    for i, width in enumerate(self.widths):
      for j in range(self.blocks):
        x = ResidualBlock(width, stride=2 if (i > 0 and j == 0) else 1, norm=self.norm,
                          kernel_grad=self.kernel_grad)(x, train)
    return jnp.mean(x, axis=(1, 2))


@MODELS.register("mlp")
def mlp(*, widths=(512, 512)):
  return MLP(tuple(widths))


@MODELS.register("small_cnn")
def small_cnn(*, channels=(16, 32), kernels=(5, 7), kernel_grad="auto"):
  return SmallCNN(tuple(channels), tuple(kernels), kernel_grad)


@MODELS.register("lenet")
def lenet(*, batch_norm=True, width=128, kernel_grad="auto", channels=(32, 64)):
  return LeNet(batch_norm, width, kernel_grad, tuple(channels))


@MODELS.register("mil")
def mil(*, instance=(("name", "lenet"), ("batch_norm", False), ("channels", (20, 50)),
                     ("width", 500)), pooling="attention", hidden=128, freeze_instance=False,
        instance_classes=0):
  """A bag classifier: `instance` is the model config (name and arguments)
  of the instance encoder (default: Ilse et al.'s), `pooling` a name of
  POOLINGS. `instance_classes` > 0: the instance encoder carries a head of that many
  classes and each instance enters the pooling as its class probabilities
  (a pretrained digit classifier's, init_scope='instance')."""
  instance = dict(instance)
  name = instance.pop("name", None)
  if name is None or name == "mil":
    raise ConfigError("model mil: model.instance needs the name of an instance encoder "
                      f"(e.g. lenet), got {name!r}")
  if not freeze_instance and (instance.get("batch_norm") or instance.get("norm") == "batch"):
    # Padding instances would enter the batch statistics, more of them in longer bags.
    raise ConfigError("model mil: a trained instance encoder cannot use batch norm (the "
                      "padding would enter its statistics); set batch_norm=False (or "
                      "norm='group'), or freeze_instance=True for a pretrained one")
  if instance.get("kernel_grad", "auto") not in layers.KERNEL_GRADS:
    raise ConfigError(f"model mil: instance.kernel_grad must be one of {layers.KERNEL_GRADS}")
  try:
    encoder = MODELS.get(name)(**instance)
  except TypeError as e:
    raise ConfigError(f"model mil: instance {name!r}: {e}") from None
  if instance_classes:
    encoder = Classifier(encoder, int(instance_classes), frozen_encoder=freeze_instance)
  return BagEncoder(encoder, POOLINGS.get(pooling)(hidden), freeze_instance)


@MODELS.register("resnet")
def resnet(*, widths=(16, 32, 64), blocks=1, norm="batch", kernel_grad="auto"):
  return ResNet(tuple(widths), blocks, norm, kernel_grad)


def build(model_config, num_classes: int, *, aux_widths=(),
          frozen_encoder: bool = False) -> Classifier:
  """A `Classifier` around the encoder `model_config.name`, built with the
  remaining fields as keyword arguments."""
  kwargs = {k: v for k, v in model_config.items() if k not in ("name", "standardize")}
  if kwargs.get("kernel_grad", "auto") not in layers.KERNEL_GRADS:
    raise ConfigError(f"model {model_config.name!r}: kernel_grad must be one of "
                      f"{layers.KERNEL_GRADS}, got {kwargs['kernel_grad']!r}")
  factory = MODELS.get(model_config.name)
  try:
    encoder = factory(**kwargs)
  except TypeError as e:
    raise ConfigError(f"model {model_config.name!r}: {e}") from None
  return Classifier(encoder, num_classes, tuple(aux_widths), frozen_encoder,
                    tuple(model_config.get("standardize", ())))
