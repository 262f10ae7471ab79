"""jaxscratch: a functional JAX reimplementation of *Deep Learning from Scratch* (Weidman, 2019).

Every forward pass is a pure function and every backward pass is derived by hand; ``jax.grad`` and
``jax.vjp`` appear only in the gradient oracle (:mod:`jaxscratch.oracle`) and in tests.

``import jaxscratch as js`` gives the names a user needs to build, train, check and reload a
model; everything else stays importable from its subpackage (the layers, bottom to top):

* :mod:`jaxscratch.core`: the op contract, the registry, ``serial``; :mod:`jaxscratch.validate`,
  :mod:`jaxscratch.fileio`: argument checks and atomic writes
* :mod:`jaxscratch.ops`: activations, dense, dropout, losses, conv, pool, recurrent cells, init
* :mod:`jaxscratch.optim`: optimizers, learning-rate schedules, gradient clipping
* :mod:`jaxscratch.data`: Boston, MNIST-format IDX files, CSV/NPZ tables
* :mod:`jaxscratch.train`: ``fit`` (one host loop over one compiled kernel), ``TrainState``,
  early-stopping policies, metrics, data parallelism
* :mod:`jaxscratch.oracle`: the gradient oracle
* :mod:`jaxscratch.book`: the book's chapter 1 calculus, chapter 2 step-by-step models, its numpy
  draws (book mode) and the chapter 6 character model
* :mod:`jaxscratch.runs`: TOML configs, run directories, checkpoints, the CLI
"""

from jaxscratch.core import Loss, Op, init_params, register, register_loss, serial
from jaxscratch.ops.conv import conv2d, conv_layer
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.losses import mean_squared_error, softmax_cross_entropy
from jaxscratch.ops.pool import flatten, make_max_pool2d
from jaxscratch.ops.rnn import gru_layer, lstm_layer, rnn_layer
from jaxscratch.optim.clipping import clip_elementwise, clip_global_norm
from jaxscratch.optim.optimizers import Optimizer, adagrad, adam, rmsprop, sgd, sgd_momentum
from jaxscratch.optim.schedules import exponential_decay, linear_decay
from jaxscratch.oracle.check import check_loss, check_op
from jaxscratch.oracle.custom import assert_backward, check_custom_vjp
from jaxscratch.runs.loader import load_run
from jaxscratch.runs.saved import load, save
from jaxscratch.train.loop import fit, predict
from jaxscratch.train.many import fit_many, init_many
from jaxscratch.train.metrics import accuracy, mae, rmse
from jaxscratch.train.state import TrainState, init_state
from jaxscratch.train.stopping import EarlyStopping, book_rule

__version__ = "0.2.0"

__all__ = [
    "EarlyStopping",
    "Loss",
    "Op",
    "Optimizer",
    "TrainState",
    "accuracy",
    "adagrad",
    "adam",
    "assert_backward",
    "book_rule",
    "check_custom_vjp",
    "check_loss",
    "check_op",
    "clip_elementwise",
    "clip_global_norm",
    "conv2d",
    "conv_layer",
    "dense",
    "dropout",
    "exponential_decay",
    "fit",
    "fit_many",
    "flatten",
    "gru_layer",
    "init_many",
    "init_params",
    "init_state",
    "linear_decay",
    "load",
    "load_run",
    "lstm_layer",
    "mae",
    "make_max_pool2d",
    "mean_squared_error",
    "predict",
    "register",
    "register_loss",
    "rmse",
    "rmsprop",
    "rnn_layer",
    "save",
    "serial",
    "sgd",
    "sgd_momentum",
    "softmax_cross_entropy",
]
