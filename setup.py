"""mnist_ten: image classification with (almost) no labels, in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="mnist_ten",
    version="0.1.0",
    description="Semi-supervised image classification from one label per class, in JAX/Flax.",
    packages=find_packages(include=["mnist_ten", "mnist_ten.*"]),
    python_requires=">=3.10",
    # Lower bounds are the versions this project was tested with together.
    install_requires=[
        "absl-py>=2.1",
        "dm-pix>=0.4.3",
        "flax>=0.10.4",
        "jax>=0.5.0",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "tensorboard>=2.16",  # event files only; written without TensorFlow
        # TFDS reads its prepared data through TensorFlow; training itself does
        # not import either (see mnist_ten/datasets.py).
        "tensorflow-datasets>=4.9.6",
        "importlib_resources",  # tensorflow-datasets 4.9.10 imports it undeclared
        "tensorflow-cpu>=2.16; platform_system != 'Darwin'",
        "tensorflow>=2.16; platform_system == 'Darwin'",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3"],
    },
)
