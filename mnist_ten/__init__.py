"""mnist_ten: image classification with (almost) no labels, in JAX/Flax."""
from mnist_ten.inference import load_classifier
from mnist_ten.train import train_and_evaluate

__all__ = ["load_classifier", "train_and_evaluate"]
