"""mnist_ten: image classification with (almost) no labels, in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="mnist_ten",
    version="0.1.0",
    description="Semi-supervised image classification from one label per class, in JAX/Flax.",
    packages=find_packages(include=["mnist_ten", "mnist_ten.*"]),
    python_requires=">=3.10",
    # Lower bounds: the versions this project was tested with together (2026-11).
    install_requires=[
        "absl-py>=2.5.1",
        "dm-pix>=0.4.5",
        "flax>=0.12.8",
        "jax>=0.10.2",
        "ml-collections>=1.1.0",
        "numpy>=2.0",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "pillow>=10",  # decodes image-folder datasets (mnist_ten/folders.py)
        "tensorboard>=2.21",  # event files only; written without TensorFlow
        # TFDS reads its prepared data through TensorFlow; training itself does
        # not import either (see mnist_ten/datasets.py).
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tensorflow-datasets 4.9.10 imports it undeclared
        "tensorflow-cpu>=2.21; platform_system != 'Darwin'",
        "tensorflow>=2.21; platform_system == 'Darwin'",
    ],
    extras_require={
        # The run's figures (mnist_ten/plots.py); without them a run still finishes.
        "plots": ["matplotlib>=3.8", "scikit-learn>=1.4"],
        # The suite checks the figures and executes the notebooks.
        # pytest-xdist: the suite runs on two workers (.ci/run).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "matplotlib>=3.8", "scikit-learn>=1.4",
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        # experiments/benchmark.py's reference step only; training never imports it.
        "bench": ["torch>=2"],
    },
)
