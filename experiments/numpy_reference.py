"""The book's numpy implementations, written the book's way, for the benchmarks.

Weidman's ``lincoln`` library structure: stateful ``Operation`` objects that store their input and
output on ``self`` (``forward`` -> ``_output``; ``backward`` -> ``_input_grad`` and, for
``ParamOperation``, ``_param_grad``), ``Layer`` objects that set themselves up lazily at the first
forward pass, a ``NeuralNetwork`` that chains layers, a loss, an ``Optimizer`` that walks
``net.params()`` / ``net.param_grads()`` updating arrays in place, and a ``Trainer`` that permutes
the data every epoch (``np.random.permutation``), yields sequential batches, evaluates every
``eval_every`` epochs and ``deepcopy``\\ s the network before each evaluation epoch (for early
stopping). Chapter 5's ``Conv2D_Op`` (padding with per-row Python loops, an im2col of
``(H * W)`` stacked patches, one matmul) and chapter 6's ``LSTMNode`` / ``LSTMLayer`` (a Python
loop over time, one node object per step) are reproduced the same way.

Differences from the book's code, all chosen so that these are the *same models* as the
jaxscratch ones they are timed against, at the same cost:

* the known gradient bugs are fixed: the convolution's input gradient uses the flipped kernel and
  its kernel gradient keeps each sample's patches with that sample's output gradient;
  the softmax cross-entropy value is ``-sum(y log p) / batch`` (the book's extra
  ``(1-y) log(1-p)`` term, which its gradient ignores, is dropped);
* parameters take the dtype of the data (float32 models train in float32, as the JAX ones do);
* the recurrent loss is the mean over batch and time (as ``sequence_softmax_cross_entropy``), and
  AdaGrad is ``h += g^2; p -= lr g / (sqrt(h) + eps)`` (as :func:`jaxscratch.optim.optimizers.adagrad`);
* ``set_params`` loads given parameter values, so a test can check these gradients against the
  JAX ones.

Nothing here is used by jaxscratch; the tests check the gradients of these classes against
``jax.vjp`` of the same model so that the timing comparison compares like with like.
"""

# ruff: noqa: NPY002  (the book draws from numpy's legacy global RNG, on purpose)
from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------------------
# Operations (chapter 3)
# ------------------------------------------------------------------------------------------------


def assert_same_shape(array: np.ndarray, array_grad: np.ndarray) -> None:
    if array.shape != array_grad.shape:
        raise ValueError(
            f"two arrays should have the same shape; got {array.shape} and {array_grad.shape}"
        )


class Operation:
    """Base class: ``forward`` stores ``input_`` and ``output``; ``backward`` the input gradient."""

    def forward(self, input_: np.ndarray, inference: bool = False) -> np.ndarray:
        self.input_ = input_
        self.output = self._output(inference)
        return self.output

    def backward(self, output_grad: np.ndarray) -> np.ndarray:
        assert_same_shape(self.output, output_grad)
        self.input_grad = self._input_grad(output_grad)
        assert_same_shape(self.input_, self.input_grad)
        return self.input_grad

    def _output(self, inference: bool) -> np.ndarray:
        raise NotImplementedError

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ParamOperation(Operation):
    """An operation with a parameter; ``backward`` also stores ``param_grad``."""

    def __init__(self, param: np.ndarray):
        super().__init__()
        self.param = param

    def backward(self, output_grad: np.ndarray) -> np.ndarray:
        assert_same_shape(self.output, output_grad)
        self.input_grad = self._input_grad(output_grad)
        self.param_grad = self._param_grad(output_grad)
        assert_same_shape(self.input_, self.input_grad)
        assert_same_shape(self.param, self.param_grad)
        return self.input_grad

    def _param_grad(self, output_grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class WeightMultiply(ParamOperation):
    def _output(self, inference: bool) -> np.ndarray:
        return np.dot(self.input_, self.param)

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return np.dot(output_grad, np.transpose(self.param, (1, 0)))

    def _param_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return np.dot(np.transpose(self.input_, (1, 0)), output_grad)


class BiasAdd(ParamOperation):
    def _output(self, inference: bool) -> np.ndarray:
        return self.input_ + self.param

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return np.ones_like(self.input_) * output_grad

    def _param_grad(self, output_grad: np.ndarray) -> np.ndarray:
        param_grad = np.ones_like(self.param) * output_grad
        return np.sum(param_grad, axis=0).reshape(1, param_grad.shape[1])


class Sigmoid(Operation):
    def _output(self, inference: bool) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-1.0 * self.input_))

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        sigmoid_backward = self.output * (1.0 - self.output)
        return sigmoid_backward * output_grad


class Tanh(Operation):
    def _output(self, inference: bool) -> np.ndarray:
        return np.tanh(self.input_)

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return output_grad * (1 - self.output * self.output)


class Linear(Operation):
    def _output(self, inference: bool) -> np.ndarray:
        return self.input_

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return output_grad


class Dropout(Operation):
    """Book dropout: train ``x * mask`` (``mask ~ binomial(1, keep_prob)``), inference ``x * p``."""

    def __init__(self, keep_prob: float = 0.8):
        super().__init__()
        self.keep_prob = keep_prob

    def _output(self, inference: bool) -> np.ndarray:
        if inference:
            return self.input_ * self.keep_prob
        self.mask = np.random.binomial(1, self.keep_prob, size=self.input_.shape).astype(
            self.input_.dtype
        )
        return self.input_ * self.mask

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return output_grad * self.mask


class Flatten(Operation):
    def _output(self, inference: bool) -> np.ndarray:
        return self.input_.reshape(self.input_.shape[0], -1)

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        return output_grad.reshape(self.input_.shape)


# ------------------------------------------------------------------------------------------------
# Convolution (chapter 5): the book's batch im2col, padding rows one by one in Python
# ------------------------------------------------------------------------------------------------


class Conv2D_Op(ParamOperation):
    """ "Same" convolution, stride 1. param: (in_channels, out_channels, k, k) (the book's layout)."""

    def __init__(self, W: np.ndarray):
        super().__init__(W)
        self.param_size = W.shape[2]
        self.param_pad = self.param_size // 2

    def _pad_1d(self, inp: np.ndarray) -> np.ndarray:
        z = np.array([0], dtype=inp.dtype)
        z = np.repeat(z, self.param_pad)
        return np.concatenate([z, inp, z])

    def _pad_1d_batch(self, inp: np.ndarray) -> np.ndarray:
        outs = [self._pad_1d(obs) for obs in inp]
        return np.stack(outs)

    def _pad_2d_obs(self, inp: np.ndarray) -> np.ndarray:
        inp_pad = self._pad_1d_batch(inp)
        other = np.zeros((self.param_pad, inp.shape[0] + self.param_pad * 2), dtype=inp.dtype)
        return np.concatenate([other, inp_pad, other])

    def _pad_2d_channel(self, inp: np.ndarray) -> np.ndarray:
        return np.stack([self._pad_2d_obs(channel) for channel in inp])

    def _get_image_patches(self, input_: np.ndarray) -> np.ndarray:
        """(H*W, batch, channels, k, k): every k x k patch of the padded images."""
        imgs_batch_pad = np.stack([self._pad_2d_channel(obs) for obs in input_])
        patches = []
        img_height = imgs_batch_pad.shape[2]
        for h in range(img_height - self.param_size + 1):
            for w in range(img_height - self.param_size + 1):
                patch = imgs_batch_pad[:, :, h : h + self.param_size, w : w + self.param_size]
                patches.append(patch)
        return np.stack(patches)

    def _output(self, inference: bool = False) -> np.ndarray:
        batch_size = self.input_.shape[0]
        img_height = self.input_.shape[2]
        img_size = self.input_.shape[2] * self.input_.shape[3]
        patch_size = self.param.shape[0] * self.param.shape[2] * self.param.shape[3]
        patches = self._get_image_patches(self.input_)
        patches_reshaped = patches.transpose(1, 0, 2, 3, 4).reshape(batch_size, img_size, -1)
        param_reshaped = self.param.transpose(0, 2, 3, 1).reshape(patch_size, -1)
        output_reshaped = (
            np.matmul(patches_reshaped, param_reshaped)
            .reshape(batch_size, img_height, img_height, -1)
            .transpose(0, 3, 1, 2)
        )
        return output_reshaped

    def _input_grad(self, output_grad: np.ndarray) -> np.ndarray:
        batch_size = self.input_.shape[0]
        img_height = self.input_.shape[2]
        img_size = self.input_.shape[2] * self.input_.shape[3]
        output_patches = (
            self._get_image_patches(output_grad)
            .transpose(1, 0, 2, 3, 4)
            .reshape(batch_size * img_size, -1)
        )
        # fixed: the input gradient correlates with the spatially flipped kernel
        flipped = self.param[:, :, ::-1, ::-1]
        param_reshaped = flipped.reshape(self.param.shape[0], -1).transpose(1, 0)
        return (
            np.matmul(output_patches, param_reshaped)
            .reshape(batch_size, img_height, img_height, self.param.shape[0])
            .transpose(0, 3, 1, 2)
        )

    def _param_grad(self, output_grad: np.ndarray) -> np.ndarray:
        param_size = self.param.shape[2]
        batch_size = self.input_.shape[0]
        img_size = self.input_.shape[2] * self.input_.shape[3]
        in_channels = self.param.shape[0]
        out_channels = self.param.shape[1]
        # fixed: (patch, batch, ...) -> (batch, patch, ...) before flattening, so each sample's
        # patches meet that sample's output gradient
        in_patches_reshape = (
            self._get_image_patches(self.input_)
            .transpose(1, 0, 2, 3, 4)
            .reshape(batch_size * img_size, -1)
            .transpose(1, 0)
        )
        out_grad_reshape = output_grad.transpose(0, 2, 3, 1).reshape(batch_size * img_size, -1)
        return (
            np.matmul(in_patches_reshape, out_grad_reshape)
            .reshape(in_channels, param_size, param_size, out_channels)
            .transpose(0, 3, 1, 2)
        )


# ------------------------------------------------------------------------------------------------
# Layers, network, losses, optimizers, trainer (chapters 3-5)
# ------------------------------------------------------------------------------------------------


class Layer:
    """Lazily set up at the first forward pass; ``params`` / ``param_grads`` lists."""

    def __init__(self, neurons: int):
        self.neurons = neurons
        self.first = True
        self.params: list[np.ndarray] = []
        self.param_grads: list[np.ndarray] = []
        self.operations: list[Operation] = []
        self.seed: int | None = None

    def _setup_layer(self, input_: np.ndarray) -> None:
        raise NotImplementedError

    def forward(self, input_: np.ndarray, inference: bool = False) -> np.ndarray:
        if self.first:
            self._setup_layer(input_)
            self.first = False
        self.input_ = input_
        for operation in self.operations:
            input_ = operation.forward(input_, inference)
        self.output = input_
        return self.output

    def backward(self, output_grad: np.ndarray) -> np.ndarray:
        assert_same_shape(self.output, output_grad)
        for operation in reversed(self.operations):
            output_grad = operation.backward(output_grad)
        input_grad = output_grad
        self._param_grads()
        return input_grad

    def _param_grads(self) -> None:
        self.param_grads = []
        for operation in self.operations:
            if issubclass(operation.__class__, ParamOperation):
                self.param_grads.append(operation.param_grad)

    def _params(self) -> None:
        self.params = []
        for operation in self.operations:
            if issubclass(operation.__class__, ParamOperation):
                self.params.append(operation.param)


class Dense(Layer):
    def __init__(
        self,
        neurons: int,
        activation: Operation | None = None,
        dropout: float = 1.0,
        weight_init: str = "standard",
    ):
        super().__init__(neurons)
        self.activation = activation if activation is not None else Sigmoid()
        self.dropout = dropout
        self.weight_init = weight_init

    def _setup_layer(self, input_: np.ndarray) -> None:
        if self.seed:
            np.random.seed(self.seed)
        num_in = input_.shape[1]
        scale = np.sqrt(2 / (num_in + self.neurons)) if self.weight_init == "glorot" else 1.0
        dtype = input_.dtype
        self.params = [
            np.random.normal(loc=0, scale=scale, size=(num_in, self.neurons)).astype(dtype),
            np.random.normal(loc=0, scale=scale, size=(1, self.neurons)).astype(dtype),
        ]
        self.operations = [
            WeightMultiply(self.params[0]),
            BiasAdd(self.params[1]),
            self.activation,
        ]
        if self.dropout < 1.0:
            self.operations.append(Dropout(self.dropout))


class Conv2D(Layer):
    def __init__(
        self,
        out_channels: int,
        param_size: int,
        dropout: float = 1.0,
        weight_init: str = "normal",
        activation: Operation | None = None,
        flatten: bool = False,
    ):
        super().__init__(out_channels)
        self.param_size = param_size
        self.activation = activation if activation is not None else Linear()
        self.flatten = flatten
        self.dropout = dropout
        self.weight_init = weight_init
        self.out_channels = out_channels

    def _setup_layer(self, input_: np.ndarray) -> None:
        in_channels = input_.shape[1]
        k2 = self.param_size * self.param_size
        if self.weight_init == "glorot":
            scale = np.sqrt(2 / (in_channels * k2 + self.out_channels * k2))
        else:
            scale = 1.0
        conv_param = np.random.normal(
            loc=0,
            scale=scale,
            size=(in_channels, self.out_channels, self.param_size, self.param_size),
        ).astype(input_.dtype)
        self.params = [conv_param]
        self.operations = [Conv2D_Op(conv_param), self.activation]
        if self.flatten:
            self.operations.append(Flatten())
        if self.dropout < 1.0:
            self.operations.append(Dropout(self.dropout))


class Loss:
    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float:
        assert_same_shape(prediction, target)
        self.prediction = prediction
        self.target = target
        return self._output()

    def backward(self) -> np.ndarray:
        self.input_grad = self._input_grad()
        assert_same_shape(self.prediction, self.input_grad)
        return self.input_grad

    def _output(self) -> float:
        raise NotImplementedError

    def _input_grad(self) -> np.ndarray:
        raise NotImplementedError


class MeanSquaredError(Loss):
    def _output(self) -> float:
        return np.sum(np.power(self.prediction - self.target, 2)) / self.prediction.shape[0]

    def _input_grad(self) -> np.ndarray:
        return 2.0 * (self.prediction - self.target) / self.prediction.shape[0]


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(x - logsumexp(x, axis=axis))


class SoftmaxCrossEntropy(Loss):
    def __init__(self, eps: float = 1e-9):
        super().__init__()
        self.eps = eps

    def _output(self) -> float:
        softmax_preds = softmax(self.prediction, axis=1)
        self.softmax_preds = np.clip(softmax_preds, self.eps, 1 - self.eps)
        softmax_cross_entropy_loss = -1.0 * self.target * np.log(self.softmax_preds)
        return np.sum(softmax_cross_entropy_loss) / self.prediction.shape[0]

    def _input_grad(self) -> np.ndarray:
        return (self.softmax_preds - self.target) / self.prediction.shape[0]


class NeuralNetwork:
    def __init__(self, layers: list[Layer], loss: Loss, seed: int = 1):
        self.layers = layers
        self.loss = loss
        self.seed = seed
        if seed:
            for layer in self.layers:
                layer.seed = self.seed

    def forward(self, x_batch: np.ndarray, inference: bool = False) -> np.ndarray:
        x_out = x_batch
        for layer in self.layers:
            x_out = layer.forward(x_out, inference)
        return x_out

    def backward(self, loss_grad: np.ndarray) -> None:
        grad = loss_grad
        for layer in reversed(self.layers):
            grad = layer.backward(grad)

    def train_batch(self, x_batch: np.ndarray, y_batch: np.ndarray) -> float:
        predictions = self.forward(x_batch)
        batch_loss = self.loss.forward(predictions, y_batch)
        loss_grad = self.loss.backward()
        self.backward(loss_grad)
        return batch_loss

    def params(self):
        for layer in self.layers:
            yield from layer.params

    def param_grads(self):
        for layer in self.layers:
            yield from layer.param_grads


class Optimizer:
    def __init__(self, lr: float = 0.01):
        self.lr = lr

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    def step(self) -> None:
        for param, param_grad in zip(self.net.params(), self.net.param_grads(), strict=True):
            param -= self.lr * param_grad


class SGDMomentum(Optimizer):
    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = momentum
        self.first = True

    def step(self) -> None:
        if self.first:
            self.velocities = [np.zeros_like(param) for param in self.net.params()]
            self.first = False
        for param, param_grad, velocity in zip(
            self.net.params(), self.net.param_grads(), self.velocities, strict=True
        ):
            self._update_rule(param=param, grad=param_grad, velocity=velocity)

    def _update_rule(self, **kwargs: Any) -> None:
        kwargs["velocity"] *= self.momentum
        kwargs["velocity"] += self.lr * kwargs["grad"]
        kwargs["param"] -= kwargs["velocity"]


def permute_data(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.permutation(X.shape[0])
    return X[perm], y[perm]


class Trainer:
    """The book's trainer: permute, sequential batches, evaluate every ``eval_every`` epochs."""

    def __init__(self, net: NeuralNetwork, optim: Optimizer):
        self.net = net
        self.optim = optim
        self.best_loss = 1e9
        self.optim.net = self.net

    def generate_batches(self, X: np.ndarray, y: np.ndarray, size: int = 32):
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"features and target must have the same rows: {X.shape}, {y.shape}")
        N = X.shape[0]
        for ii in range(0, N, size):
            yield X[ii : ii + size], y[ii : ii + size]

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_test: np.ndarray | None,
        y_test: np.ndarray | None,
        epochs: int = 100,
        eval_every: int = 10,
        batch_size: int = 32,
        seed: int = 1,
        restart: bool = True,
        early_stopping: bool = True,
        max_batches: int | None = None,
    ) -> list[float]:
        """Train; returns the eval losses. ``max_batches`` stops an epoch early (benchmarks)."""
        np.random.seed(seed)
        if restart:
            for layer in self.net.layers:
                layer.first = True
            self.best_loss = 1e9
        eval_losses = []
        for e in range(epochs):
            evaluate = X_test is not None and (e + 1) % eval_every == 0
            if evaluate:
                last_model = deepcopy(self.net)
            X_train, y_train = permute_data(X_train, y_train)
            batch_generator = self.generate_batches(X_train, y_train, batch_size)
            for ii, (X_batch, y_batch) in enumerate(batch_generator):
                if max_batches is not None and ii >= max_batches:
                    break
                self.net.train_batch(X_batch, y_batch)
                self.optim.step()
            if evaluate:
                test_preds = self.net.forward(X_test, inference=True)
                loss = self.net.loss.forward(test_preds, y_test)
                eval_losses.append(float(loss))
                if early_stopping:
                    if loss < self.best_loss:
                        self.best_loss = loss
                    else:
                        self.net = last_model
                        self.optim.net = self.net
                        break
        return eval_losses


def set_params(net: NeuralNetwork, values: list[np.ndarray]) -> None:
    """Overwrite the (already set up) parameters in place, in ``net.params()`` order."""
    params = list(net.params())
    if len(params) != len(values):
        raise ValueError(f"set_params: {len(values)} values for {len(params)} parameters")
    for p, v in zip(params, values, strict=True):
        if p.shape != np.shape(v):
            raise ValueError(f"set_params: shape {np.shape(v)} for a parameter {p.shape}")
        p[...] = v


# ------------------------------------------------------------------------------------------------
# Chapter 6: the LSTM character model, one node object per time step
# ------------------------------------------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-1.0 * x))


def dsigmoid(x: np.ndarray) -> np.ndarray:
    return sigmoid(x) * (1 - sigmoid(x))


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def dtanh(x: np.ndarray) -> np.ndarray:
    return 1 - np.tanh(x) * np.tanh(x)


LSTM_GATES = ("f", "i", "c", "o")


class LSTMNode:
    def forward(
        self, X_in: np.ndarray, H_in: np.ndarray, C_in: np.ndarray, params_dict: dict
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.X_in = X_in
        self.C_in = C_in
        self.Z = np.column_stack((X_in, H_in))
        self.f_int = np.dot(self.Z, params_dict["W_f"]["value"]) + params_dict["B_f"]["value"]
        self.f = sigmoid(self.f_int)
        self.i_int = np.dot(self.Z, params_dict["W_i"]["value"]) + params_dict["B_i"]["value"]
        self.i = sigmoid(self.i_int)
        self.C_bar_int = np.dot(self.Z, params_dict["W_c"]["value"]) + params_dict["B_c"]["value"]
        self.C_bar = tanh(self.C_bar_int)
        self.C_out = self.f * C_in + self.i * self.C_bar
        self.o_int = np.dot(self.Z, params_dict["W_o"]["value"]) + params_dict["B_o"]["value"]
        self.o = sigmoid(self.o_int)
        self.H_out = self.o * tanh(self.C_out)
        self.X_out = np.dot(self.H_out, params_dict["W_v"]["value"]) + params_dict["B_v"]["value"]
        return self.X_out, self.H_out, self.C_out

    def backward(
        self, X_out_grad: np.ndarray, H_out_grad: np.ndarray, C_out_grad: np.ndarray, params_dict
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        params_dict["W_v"]["deriv"] += np.dot(self.H_out.T, X_out_grad)
        params_dict["B_v"]["deriv"] += X_out_grad.sum(axis=0, keepdims=True)
        dh_out = np.dot(X_out_grad, params_dict["W_v"]["value"].T)
        dh_out += H_out_grad
        do = dh_out * tanh(self.C_out)
        do_int = dsigmoid(self.o_int) * do
        params_dict["W_o"]["deriv"] += np.dot(self.Z.T, do_int)
        params_dict["B_o"]["deriv"] += do_int.sum(axis=0, keepdims=True)
        dC_out = dh_out * self.o * dtanh(self.C_out)
        dC_out += C_out_grad
        dC_bar = dC_out * self.i
        dC_bar_int = dtanh(self.C_bar_int) * dC_bar
        params_dict["W_c"]["deriv"] += np.dot(self.Z.T, dC_bar_int)
        params_dict["B_c"]["deriv"] += dC_bar_int.sum(axis=0, keepdims=True)
        di = dC_out * self.C_bar
        di_int = dsigmoid(self.i_int) * di
        params_dict["W_i"]["deriv"] += np.dot(self.Z.T, di_int)
        params_dict["B_i"]["deriv"] += di_int.sum(axis=0, keepdims=True)
        df = dC_out * self.C_in
        df_int = dsigmoid(self.f_int) * df
        params_dict["W_f"]["deriv"] += np.dot(self.Z.T, df_int)
        params_dict["B_f"]["deriv"] += df_int.sum(axis=0, keepdims=True)
        dz = (
            np.dot(df_int, params_dict["W_f"]["value"].T)
            + np.dot(di_int, params_dict["W_i"]["value"].T)
            + np.dot(dC_bar_int, params_dict["W_c"]["value"].T)
            + np.dot(do_int, params_dict["W_o"]["value"].T)
        )
        dX_prev = dz[:, : self.X_in.shape[1]]
        dH_prev = dz[:, self.X_in.shape[1] :]
        dC_prev = self.f * dC_out
        return dX_prev, dH_prev, dC_prev


class LSTMLayer:
    """The book's LSTMLayer: learned start states (mean of the last batch's final states in the
    book; here trained by their gradient as jaxscratch's ``start_H``/``start_C``)."""

    def __init__(self, hidden_size: int, output_size: int, weight_scale: float = 0.01):
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.weight_scale = weight_scale
        self.first = True

    def _init_params(self, input_: np.ndarray) -> None:
        self.vocab_size = input_.shape[2]
        dtype = input_.dtype
        n, h = self.vocab_size + self.hidden_size, self.hidden_size
        self.params: dict[str, dict[str, np.ndarray]] = {}
        for g in LSTM_GATES:
            self.params[f"W_{g}"] = {"value": np.random.normal(0, self.weight_scale, (n, h))}
            self.params[f"B_{g}"] = {"value": np.random.normal(0, self.weight_scale, (1, h))}
        self.params["W_v"] = {
            "value": np.random.normal(0, self.weight_scale, (h, self.output_size))
        }
        self.params["B_v"] = {
            "value": np.random.normal(0, self.weight_scale, (1, self.output_size))
        }
        self.params["start_H"] = {"value": np.zeros((1, h))}
        self.params["start_C"] = {"value": np.zeros((1, h))}
        for key in self.params:
            self.params[key]["value"] = self.params[key]["value"].astype(dtype)
            self.params[key]["deriv"] = np.zeros_like(self.params[key]["value"])
        self.cells = [LSTMNode() for _ in range(input_.shape[1])]

    def _clear_gradients(self) -> None:
        for key in self.params:
            self.params[key]["deriv"] = np.zeros_like(self.params[key]["deriv"])

    def forward(self, x_seq_in: np.ndarray) -> np.ndarray:
        if self.first:
            self._init_params(x_seq_in)
            self.first = False
        batch_size = x_seq_in.shape[0]
        H_in = np.repeat(np.copy(self.params["start_H"]["value"]), batch_size, axis=0)
        C_in = np.repeat(np.copy(self.params["start_C"]["value"]), batch_size, axis=0)
        sequence_length = x_seq_in.shape[1]
        x_seq_out = np.zeros((batch_size, sequence_length, self.output_size), x_seq_in.dtype)
        for t in range(sequence_length):
            x_in = x_seq_in[:, t, :]
            y_out, H_in, C_in = self.cells[t].forward(x_in, H_in, C_in, self.params)
            x_seq_out[:, t, :] = y_out
        return x_seq_out

    def backward(self, x_seq_out_grad: np.ndarray) -> np.ndarray:
        batch_size = x_seq_out_grad.shape[0]
        h_in_grad = np.zeros((batch_size, self.hidden_size), x_seq_out_grad.dtype)
        c_in_grad = np.zeros((batch_size, self.hidden_size), x_seq_out_grad.dtype)
        num_chars = x_seq_out_grad.shape[1]
        x_seq_in_grad = np.zeros((batch_size, num_chars, self.vocab_size), x_seq_out_grad.dtype)
        for t in reversed(range(num_chars)):
            x_out_grad = x_seq_out_grad[:, t, :]
            grad_out, h_in_grad, c_in_grad = self.cells[t].backward(
                x_out_grad, h_in_grad, c_in_grad, self.params
            )
            x_seq_in_grad[:, t, :] = grad_out
        self.params["start_H"]["deriv"] += h_in_grad.sum(axis=0, keepdims=True)
        self.params["start_C"]["deriv"] += c_in_grad.sum(axis=0, keepdims=True)
        return x_seq_in_grad


class SequenceSoftmaxCrossEntropy:
    """Softmax over the last axis, row by row as the book's chapter 6 loss; mean over batch*time."""

    def __init__(self, eps: float = 1e-9):
        self.eps = eps

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float:
        assert_same_shape(prediction, target)
        self.prediction = prediction
        self.target = target
        out = [softmax(row, axis=1) for row in prediction]
        self.softmax_preds = np.clip(np.stack(out), self.eps, 1 - self.eps)
        self.count = prediction.shape[0] * prediction.shape[1]
        return float(np.sum(-1.0 * target * np.log(self.softmax_preds)) / self.count)

    def backward(self) -> np.ndarray:
        return (self.softmax_preds - self.target) / self.count


class RNNModel:
    def __init__(self, layers: list[LSTMLayer], loss: SequenceSoftmaxCrossEntropy):
        self.layers = layers
        self.loss = loss

    def forward(self, x_batch: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x_batch = layer.forward(x_batch)
        return x_batch

    def backward(self, loss_grad: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            loss_grad = layer.backward(loss_grad)
        return loss_grad

    def single_step(self, x_batch: np.ndarray, y_batch: np.ndarray) -> float:
        x_batch_out = self.forward(x_batch)
        loss = self.loss.forward(x_batch_out, y_batch)
        loss_grad = self.loss.backward()
        for layer in self.layers:
            layer._clear_gradients()
        self.backward(loss_grad)
        return loss


class AdaGrad:
    """``h += g^2; p -= lr g / (sqrt(h) + eps)`` on every layer's params, optional clipping."""

    def __init__(self, lr: float = 0.01, eps: float = 1e-7, gradient_clipping: bool = False):
        self.lr = lr
        self.eps = eps
        self.gradient_clipping = gradient_clipping
        self.first = True

    def step(self) -> None:
        if self.first:
            for layer in self.model.layers:
                for key in layer.params:
                    layer.params[key]["sum_squares"] = np.zeros_like(layer.params[key]["value"])
            self.first = False
        for layer in self.model.layers:
            for key in layer.params:
                if self.gradient_clipping:
                    np.clip(layer.params[key]["deriv"], -2, 2, layer.params[key]["deriv"])
                self._update_rule(
                    param=layer.params[key]["value"],
                    grad=layer.params[key]["deriv"],
                    sum_square=layer.params[key]["sum_squares"],
                )

    def _update_rule(self, **kwargs: Any) -> None:
        kwargs["sum_square"] += kwargs["grad"] * kwargs["grad"]
        lr = np.divide(self.lr, np.sqrt(kwargs["sum_square"]) + self.eps)
        kwargs["param"] -= lr * kwargs["grad"]


class RNNTrainer:
    """The book's character trainer: consecutive windows of ``sequence_length`` characters, one
    row per start position, one-hot encoded in Python loops, ``batch_size`` rows per step."""

    def __init__(
        self,
        text: str,
        model: RNNModel,
        optim: AdaGrad,
        batch_size: int = 32,
        sequence_length: int = 25,
    ):
        self.data = text
        self.model = model
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        self.char_to_idx = {ch: i for i, ch in enumerate(self.chars)}
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.optim = optim
        self.optim.model = self.model
        self.start_pos = 0

    def _generate_inputs_targets(self, start_pos: int) -> tuple[np.ndarray, np.ndarray]:
        inputs_indices = np.zeros((self.batch_size, self.sequence_length), dtype=int)
        targets_indices = np.zeros((self.batch_size, self.sequence_length), dtype=int)
        for i in range(self.batch_size):
            inputs_indices[i, :] = np.array(
                [
                    self.char_to_idx[ch]
                    for ch in self.data[start_pos + i : start_pos + self.sequence_length + i]
                ]
            )
            targets_indices[i, :] = np.array(
                [
                    self.char_to_idx[ch]
                    for ch in self.data[
                        start_pos + 1 + i : start_pos + self.sequence_length + i + 1
                    ]
                ]
            )
        return inputs_indices, targets_indices

    def _generate_one_hot_array(self, indices: np.ndarray, dtype: Any) -> np.ndarray:
        batch = []
        for seq in indices:
            one_hot_sequence = []
            for el in seq:
                one_hot_char = np.zeros(self.vocab_size, dtype=dtype)
                one_hot_char[el] = 1
                one_hot_sequence.append(one_hot_char)
            batch.append(np.stack(one_hot_sequence))
        return np.stack(batch)

    def train(self, num_iterations: int, dtype: Any = np.float32) -> list[float]:
        losses = []
        for _ in range(num_iterations):
            if self.start_pos + self.sequence_length + self.batch_size + 1 > len(self.data):
                self.start_pos = 0
            inputs, targets = self._generate_inputs_targets(self.start_pos)
            inputs_batch = self._generate_one_hot_array(inputs, dtype)
            targets_batch = self._generate_one_hot_array(targets, dtype)
            losses.append(self.model.single_step(inputs_batch, targets_batch))
            self.optim.step()
            self.start_pos += self.batch_size
        return losses
