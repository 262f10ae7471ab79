"""jaxscratch: a functional JAX reimplementation of *Deep Learning from Scratch* (Weidman, 2019).

Every forward pass is a pure function and every backward pass is derived by hand; ``jax.grad`` and
``jax.vjp`` appear only in the gradient oracle (:mod:`jaxscratch.oracle.check`) and in tests.
"""

__version__ = "0.1.0"
