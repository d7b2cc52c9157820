"""Nearest-neighbour baseline on raw pixels: no training, the labeled examples
are the whole model."""
from mnist_ten.methods import METHODS, Method
from mnist_ten.neighbors import knn_predict


@METHODS.register("knn")
class NearestNeighbour(Method):
  trains = False

  def __init__(self, config, ctx):
    super().__init__(config, ctx)
    self.k = config.knn.k

  def predict(self, labeled_images, labeled_labels, images):
    return knn_predict(labeled_images / 255.0, labeled_labels, images / 255.0,
                       k=self.k, num_classes=self.ctx.num_classes)
