"""Networks by name, each split into a deterministic trunk and a stochastic (dropout) head.

The trunk is everything before the first stochastic layer; it runs once per input. The head is a
stack of dense layers, each with dropout on its input. At scoring time a posterior sample is a whole
network (Kirsch et al. 2019, "consistent MC dropout"): K dropout masks are drawn once and shared by
every pool item. A mask on a layer's input equals masking that layer's weight columns, so the K
masks fold into K weight matrices and the K heads run as one wide matrix product.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alab.errors import AlabError
from alab.acquisition.regression import gaussian_nll_loss
from alab.registry import Registry


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialization of every Linear and Conv2d layer, drawn from `generator`.

    W ~ U(-b, b) with b = 1/sqrt(fan_in) (kaiming uniform, a = sqrt(5)); bias ~ U(-1/sqrt(fan_in), ...).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                fan_in = layer.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _glorot_uniform(module: nn.Module, generator: torch.Generator, *, kernel_in_fan_out: bool) -> None:
    """W ~ U(-b, b), b = sqrt(6 / (fan_in + fan_out)), zero biases, for every Linear and Conv2d layer.

    fan_in = in_features (or in_channels * kh * kw); fan_out = out_features, or for a convolution
    out_channels * kh * kw (`kernel_in_fan_out`) or out_channels alone.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            fan_in = layer.weight[0].numel()
            fan_out = layer.weight.shape[0] * (layer.weight[0, 0].numel() if kernel_in_fan_out else 1)
            bound = math.sqrt(6 / (fan_in + fan_out))
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def glorot_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Glorot & Bengio 2010 (`torch.nn.init.xavier_uniform_`, Keras' `glorot_uniform` since Keras 1):
    fans count the kernel's receptive field on both sides; zero biases."""
    _glorot_uniform(module, generator, kernel_in_fan_out=True)


def keras03_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Keras 0.3's `glorot_uniform` (the Keras of Gal et al. 2017's code): a kernel's fan-out is its filters.

    Keras 0.3's `get_fans` on the Theano kernel shape (filters, channels, kh, kw) gives fan_in =
    channels * kh * kw, fan_out = filters (Riashat/Deep-Bayesian-Active-Learning @ e4e970ca,
    keras/keras/initializations.py L6-9): a wider bound than Glorot & Bengio's (2.7x on Gal's first
    3x3 convolution). Dense layers as `glorot`.
    """
    _glorot_uniform(module, generator, kernel_in_fan_out=False)


INITIALIZATIONS = {"torch": init_parameters, "glorot": glorot_parameters, "keras0.3": keras03_parameters}


def dropout_mask(shape: Sequence[int], p: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """Inverted-dropout mask: 1/(1-p) where kept, 0 where dropped; drawn on the CPU for reproducibility."""
    return mask_from_uniform(torch.rand(tuple(shape), generator=generator), p, 1).to(device)


def mask_from_uniform(uniform: Tensor, p: float, group: int) -> Tensor:
    """The inverted-dropout mask of U(0, 1) draws, u >= p kept as 1/(1-p), each entry repeated `group` times along the last axis.

    Elementwise, so a stack of draws [M, ...] gives each of its M masks exactly (`alab.lockstep`).
    """
    mask = (uniform >= p).to(torch.float32) / (1.0 - p)
    return mask if group == 1 else mask.repeat_interleave(group, dim=-1)


# A training mask's draw: (shape of the U(0, 1) draws, dropout rate, group size): see `DropoutHead.mask_draws`
MaskDraw = tuple[tuple[int, ...], float, int]


def draw_masks(draws: Sequence[MaskDraw], generator: torch.Generator, device: torch.device) -> list[Tensor]:
    """The masks of `draws`, one after another from `generator` (on the CPU, for reproducibility)."""
    return [mask_from_uniform(torch.rand(shape, generator=generator), p, group).to(device) for shape, p, group in draws]


# (weight_K_Out_In, bias_K_Out): one dense layer of each of K networks
StackedLayer = tuple[Tensor, Tensor]


class DropoutHead(nn.Module):
    """Dense layers with dropout on each layer's input: h <- act(W_i (m_i * h) + b_i), ReLU between."""

    def __init__(self, dims: Sequence[int], dropout: Sequence[float], groups: Sequence[int] | None = None) -> None:
        """`groups[i]`: consecutive inputs of layer i that share one mask entry (1: plain dropout; the
        positions of one channel of a flattened feature map: channel dropout, as `nn.Dropout2d`)."""
        super().__init__()
        if len(dropout) != len(dims) - 1:
            raise ValueError("one dropout rate per dense layer")
        self.dropout = tuple(float(p) for p in dropout)
        self.groups = tuple(groups) if groups is not None else (1,) * len(self.dropout)
        if len(self.groups) != len(self.dropout) or any(d % g for d, g in zip(dims[:-1], self.groups)):
            raise ValueError("one mask group size per dense layer, dividing its input size")
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    def _mask(self, i: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """Layer i's input mask for n networks or items: [n, D_in], each entry repeated over its group."""
        return draw_masks([self._draw(i, n)], generator, device)[0]

    def _draw(self, i: int, n: int) -> MaskDraw:
        return (n, self.layers[i].in_features // self.groups[i]), self.dropout[i], self.groups[i]

    def mask_draws(self, n: int) -> list[MaskDraw]:
        """The draws of one training pass over n items, in the order `forward` makes them (layers with dropout)."""
        return [self._draw(i, n) for i, p in enumerate(self.dropout) if p > 0]

    def forward(self, features_N_D: Tensor, generator: torch.Generator | None = None, masks: Sequence[Tensor] | None = None) -> Tensor:
        """Logits [N, C]; with a generator, an independent dropout mask per item (training), or the
        `masks` of `mask_draws` given (drawn outside, as a stack of networks does: `alab.lockstep`)."""
        if masks is None and generator is not None:
            masks = draw_masks(self.mask_draws(features_N_D.shape[0]), generator, features_N_D.device)
        remaining = iter(masks or ())
        h_N_D = features_N_D
        for i, (p, layer) in enumerate(zip(self.dropout, self.layers)):
            if masks is not None and p > 0:
                h_N_D = h_N_D * next(remaining)
            h_N_D = layer(h_N_D)
            if i < len(self.layers) - 1:
                h_N_D = torch.relu(h_N_D)
        return h_N_D

    def penultimate(self, features_N_D: Tensor) -> Tensor:
        """The last dense layer's input with dropout off: [N, D] -> [N, H] (H = its in_features)."""
        h_N_D = features_N_D
        for layer in self.layers[:-1]:
            h_N_D = torch.relu(layer(h_N_D))
        return h_N_D

    def sample_masks(self, k: int, generator: torch.Generator) -> list[Tensor]:
        """K masks per layer, each [K, D_in], shared by every item scored with them."""
        device = self.layers[0].weight.device
        return [self._mask(i, k, generator, device) for i in range(len(self.layers))]

    def masked(self, masks: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
        """The K networks given by `masks`, folded once: features [N, D] (or [K, N, D]) -> logits [K, N, C]."""
        layers = self.fold_masks(masks)
        return lambda features: stacked_dense_forward(features, layers)

    def fold_masks(self, masks: Sequence[Tensor]) -> list[StackedLayer]:
        """The K masked networks as stacked dense layers: W_k = W * m_k (columns masked), b_k = b.

        (m_k * h) W^T = h (W * m_k)^T, so a mask on a layer's input is a mask on its weight's columns.
        Shapes: masks [K, D_in] per layer -> (weight_K_Out_In, bias_K_Out) per layer, contiguous.
        """
        stacked = []
        for mask_K_In, layer in zip(masks, self.layers):
            K = mask_K_In.shape[0]
            weight_K_Out_In = layer.weight.detach()[None] * mask_K_In[:, None, :]
            stacked.append((weight_K_Out_In, layer.bias.detach().expand(K, -1).contiguous()))
        return stacked

    def forward_masked(self, features_N_D: Tensor, masks: Sequence[Tensor]) -> Tensor:
        """Logits [K, N, C] of the K networks given by `masks`, with the masks folded into the weights."""
        return stacked_dense_forward(features_N_D, self.fold_masks(masks))


def _stacked_linear(h_K_N_I: Tensor, weight_K_O_I: Tensor, bias_K_O: Tensor, batched: bool) -> Tensor:
    """Layer k of K on input k: [K, N, I] -> [K, N, O], one product per network or one batched product."""
    dtype = h_K_N_I.dtype
    weight_K_I_O = weight_K_O_I.transpose(1, 2).to(dtype)
    if batched:  # [K, N, I] @ [K, I, O] + [K, 1, O] -> [K, N, O]
        return torch.baddbmm(bias_K_O[:, None, :].to(dtype), h_K_N_I, weight_K_I_O)
    K, N, _ = h_K_N_I.shape
    out_K_N_O = h_K_N_I.new_empty((K, N, weight_K_O_I.shape[1]))
    for k in range(K):  # [N, I] @ [I, O] + [O] -> [N, O]; a row stride of K*I is fine for the BLAS
        torch.addmm(bias_K_O[k].to(dtype), h_K_N_I[k], weight_K_I_O[k], out=out_K_N_O[k])
    return out_K_N_O


def stacked_dense_forward(features: Tensor, layers: Sequence[StackedLayer], *, batched: bool | None = None) -> Tensor:
    """Logits [K, N, C] of K dense stacks h <- relu(W_k h + b_k) (no ReLU after the last).

    `features` is [N, D], shared by the K networks, or [K, N, D], one input per network (after a
    stochastic convolution, `ConvDropoutHead`). On shared inputs the first layer of all K networks is
    one wide product [N, D] @ [D, K*H] (the weights, stacked [K*H, D] and contiguous, are read
    transposed by the BLAS: no copy); the later, small layers are one product per network on the CPU,
    where torch's batched product was far slower than K calls of the plain one at these shapes
    (K=20, 256x128 @ 128x10: 15 ms against 0.4 ms), and one batched product elsewhere. `batched`
    forces a branch (True: the batched product, False: one product per network) so that both are
    tested on any device; None chooses by device. This is what any backend whose K posterior samples
    share a trunk (MC dropout masks, weight draws of a stochastic head, heads of an ensemble) should run.
    """
    (weight_K_H_D, bias_K_H), *rest = layers
    K, H, D = weight_K_H_D.shape
    dtype = features.dtype
    if batched is None:
        batched = features.device.type != "cpu"
    if features.ndim == 3:
        h_K_N_H = _stacked_linear(features, weight_K_H_D, bias_K_H, batched)
    else:
        N = features.shape[0]
        # [N, D] @ [D, K*H] + [K*H] -> [N, K*H]: the bias is added by the GEMM (beta = 1)
        h_N_KH = torch.addmm(bias_K_H.reshape(K * H).to(dtype), features, weight_K_H_D.reshape(K * H, D).T.to(dtype))
        h_K_N_H = h_N_KH.view(N, K, H).transpose(0, 1)  # a strided view, no copy
    for weight_K_O_H, bias_K_O in rest:
        h_K_N_H = _stacked_linear(torch.relu_(h_K_N_H), weight_K_O_H, bias_K_O, batched)
    return h_K_N_H


class ConvDropoutHead(nn.Module):
    """A convolution with channel dropout on its input, max-pool 2, ReLU, flatten, then a `DropoutHead`.

    Kirsch et al. 2019's BatchBALD CNN puts channel dropout (`nn.Dropout2d`) after each convolution.
    A channel's mask entry is >= 0 and the same at all its positions, so it commutes with max-pooling
    and ReLU: the mask after the first convolution is a mask on this convolution's input channels,
    and the mask after this one is a mask on the dense layer's inputs, one channel at a time (the
    `DropoutHead`'s first `groups` entry is the feature map's positions per channel). At scoring time
    K input masks fold into K kernels, W_k[:, c] = W[:, c] m_k[c], run as one convolution with K
    times the output channels; the dense layers then run per network (`stacked_dense_forward`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float, dense: DropoutHead) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.dropout = float(dropout)
        self.dense = dense

    def mask_draws(self, n: int) -> list[MaskDraw]:
        """The draws of one training pass over n items, in `forward`'s order: channels of the input, then the dense head's."""
        channels = [((n, self.conv.in_channels, 1, 1), self.dropout, 1)] if self.dropout > 0 else []
        return [*channels, *self.dense.mask_draws(n)]

    def forward(self, features_N_I_H_W: Tensor, generator: torch.Generator | None = None, masks: Sequence[Tensor] | None = None) -> Tensor:
        """Logits [N, C]; with a generator, independent channel and unit masks per item (training), or the `masks` of `mask_draws`."""
        if masks is None and generator is not None:
            masks = draw_masks(self.mask_draws(features_N_I_H_W.shape[0]), generator, features_N_I_H_W.device)
        h = features_N_I_H_W
        if masks is not None and self.dropout > 0:
            h = h * masks[0]
            masks = masks[1:]
        h = torch.relu(F.max_pool2d(self.conv(h), 2)).flatten(1)  # [N, O, h, w] -> [N, O*h*w], channel-major
        return self.dense(h, masks=masks)

    def penultimate(self, features_N_I_H_W: Tensor) -> Tensor:
        """The last dense layer's input with dropout off: [N, I, H, W] -> [N, H'] (H' = its in_features)."""
        return self.dense.penultimate(torch.relu(F.max_pool2d(self.conv(features_N_I_H_W), 2)).flatten(1))

    def sample_masks(self, k: int, generator: torch.Generator) -> list[Tensor]:
        """K masks: [K, in_channels] on the convolution's input, then the dense head's [K, D_in] per layer."""
        device = self.conv.weight.device
        return [dropout_mask((k, self.conv.in_channels), self.dropout, generator, device), *self.dense.sample_masks(k, generator)]

    def masked(self, masks: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
        """The K networks given by `masks`, folded once: features [N, I, H, W] -> logits [K, N, C]."""
        mask_K_I, *dense_masks = masks
        K = mask_K_I.shape[0]
        weight = self.conv.weight.detach()
        weight_KO_I_h_w = (weight[None] * mask_K_I[:, None, :, None, None]).flatten(0, 1)  # [K, O, I, h, w] -> [K*O, I, h, w]
        bias_KO = self.conv.bias.detach().repeat(K)
        dense = self.dense.masked(dense_masks)

        def logits_K_N_C(features_N_I_H_W: Tensor) -> Tensor:
            dtype = features_N_I_H_W.dtype
            h = F.conv2d(features_N_I_H_W, weight_KO_I_h_w.to(dtype), bias_KO.to(dtype))  # [N, K*O, H', W']
            h = torch.relu(F.max_pool2d(h, 2))
            return dense(h.reshape(h.shape[0], K, -1).transpose(0, 1))  # [N, K*O, h, w] -> [K, N, O*h*w]

        return logits_K_N_C


def inference_trunk(trunk: nn.Module) -> Callable[[Tensor], Tensor]:
    """The trunk for scoring: a channels-last copy when it has convolutions, else the trunk itself.

    Channels-last is oneDNN's (and cuDNN's tensor-core) layout for convolutions: the Gal CNN's trunk
    runs about 1.5x faster on the CPU in it. Same function, same values up to summation order.
    """
    if not any(isinstance(layer, nn.Conv2d) for layer in trunk.modules()):
        return trunk
    trunk_cl = copy.deepcopy(trunk).to(memory_format=torch.channels_last)

    def run(x: Tensor) -> Tensor:
        return trunk_cl(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)

    return run


TASKS = ("classification", "regression")


class Network(nn.Module):
    """A deterministic trunk followed by a dropout head (`DropoutHead` or `ConvDropoutHead`), for one task.

    classification: the head gives C logits; `output` is log_softmax, `loss` the cross-entropy.
    regression: the head gives 2 numbers, a mean and a raw variance (s2 = softplus(raw) + floor,
    `alab.acquisition.regression.gaussian_params`); `output` is the raw pair, `loss` the Gaussian NLL
    (a heteroscedastic model, Nix & Weigend 1994). Backends stay task-agnostic by training with
    `loss` and sampling `output`: [K, N, C] log-probabilities or [K, N, 2] (mean, raw variance).
    """

    def __init__(self, trunk: nn.Module, head: DropoutHead | ConvDropoutHead, task: str = "classification") -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.trunk = trunk
        self.head = head
        self.task = task

    def forward(self, x: Tensor, generator: torch.Generator | None = None, masks: Sequence[Tensor] | None = None) -> Tensor:
        """Raw outputs [N, O]: dropout off, or masks drawn from `generator`, or the head's `masks` given (`mask_draws`)."""
        return self.head(self.trunk(x), generator, masks)

    def embed(self, x: Tensor, trunk: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(features_N_H, raw_N_O) of the deterministic network (dropout off): the last dense layer's input and output.

        The features are what embedding-based acquisition measures distances in (the penultimate
        layer); `raw_N_O` equals `forward(x)` without a generator, the output of the last layer on them.
        `trunk`: a faster copy of `self.trunk` to run instead (`inference_trunk`).
        """
        features_N_H = self.head.penultimate((trunk or self.trunk)(x))
        last = self.head.dense.layers[-1] if isinstance(self.head, ConvDropoutHead) else self.head.layers[-1]
        return features_N_H, last(features_N_H)

    def output(self, raw_outputs: Tensor) -> Tensor:
        """What a backend's sampled networks return: log_softmax over classes, or (mean, raw variance) as is."""
        return torch.log_softmax(raw_outputs, dim=-1) if self.task == "classification" else raw_outputs

    def loss(self, raw_outputs_N_O: Tensor, y_N: Tensor) -> Tensor:
        """Mean training loss: cross-entropy on class indices, or Gaussian NLL on (standardized) float targets."""
        if self.task == "classification":
            return F.cross_entropy(raw_outputs_N_O, y_N)
        return gaussian_nll_loss(raw_outputs_N_O, y_N)


ModelFactory = Callable[[tuple[int, ...], int], Network]
MODELS: Registry[ModelFactory] = Registry("model")


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise AlabError(f"model {name} needs image inputs (channels, height, width), got shape {input_shape}; use model = 'mlp'")
    return input_shape  # type: ignore[return-value]


@MODELS.register("gal_cnn")
def gal_cnn(input_shape: tuple[int, ...], num_classes: int, kernel_size: int = 4) -> Network:
    """Gal et al. 2017's CNN for 28x28 images: conv32-4, conv32-4, maxpool 2, dropout .25, dense 128, dropout .5.

    `kernel_size`: 4 in the paper's text and its 10-per-round scripts, 3 in the scripts of Table 1.
    """
    channels, height, width = _image_shape("gal_cnn", input_shape)
    if kernel_size < 1 or 2 * (kernel_size - 1) >= min(height, width):
        raise AlabError(f"model_options.kernel_size must be between 1 and {min(height, width) // 2} for {height}x{width} images, got {kernel_size}")
    trunk = nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size), nn.ReLU(), nn.Conv2d(32, 32, kernel_size), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
    )
    shrink = 2 * (kernel_size - 1)
    flat = 32 * ((height - shrink) // 2) * ((width - shrink) // 2)
    return Network(trunk, DropoutHead([flat, 128, num_classes], [0.25, 0.5]))


@MODELS.register("kirsch_cnn")
def kirsch_cnn(input_shape: tuple[int, ...], num_classes: int) -> Network:
    """Kirsch et al. 2019's BatchBALD CNN: conv32-5, conv64-5 (channel dropout .5, maxpool 2, ReLU each), dense 128, dropout .5.

    Layer for layer BlackHC/BatchBALD `src/mnist_model.py` (BayesianNet): conv1 -> Dropout2d -> pool -> relu
    -> conv2 -> Dropout2d -> pool -> relu -> fc1 -> dropout -> relu -> fc2, all p = 0.5 (`ConvDropoutHead`).
    """
    channels, height, width = _image_shape("kirsch_cnn", input_shape)
    h1, w1 = (height - 4) // 2, (width - 4) // 2
    h2, w2 = (h1 - 4) // 2, (w1 - 4) // 2
    if min(h2, w2) < 1:
        raise AlabError(f"model kirsch_cnn needs images of at least 16x16, got {height}x{width}")
    trunk = nn.Sequential(nn.Conv2d(channels, 32, 5), nn.MaxPool2d(2), nn.ReLU())
    dense = DropoutHead([64 * h2 * w2, 128, num_classes], [0.5, 0.5], groups=[h2 * w2, 1])
    return Network(trunk, ConvDropoutHead(32, 64, 5, 0.5, dense))


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128, p: float = 0.5) -> Network:
    """An MLP for vectors (and flattened small images): dense 128, dropout .5, dense 128, dropout .5."""
    if hidden < 1 or not 0 <= p < 1:
        raise AlabError(f"model_options: hidden must be at least 1 and p in [0, 1), got hidden = {hidden}, p = {p}")
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU())
    return Network(trunk, DropoutHead([hidden, hidden, num_classes], [p, p]))


@MODELS.register("mlp_regression")
def mlp_regression(input_shape: tuple[int, ...], num_outputs: int) -> Network:
    """The MLP with lighter dropout (.1), as Gal & Ghahramani 2016 use for regression; 'auto' for regression data."""
    return mlp(input_shape, num_outputs, p=0.1)


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """AlabError unless every key of `options` is a keyword of model `name`'s factory, of its default's type."""
    factory = MODELS.get(name)
    keywords = {k: v.default for k, v in list(inspect.signature(factory).parameters.items())[2:]}
    for key, value in options.items():
        if key not in keywords:
            valid = ", ".join(keywords) or "none"
            raise AlabError(f"unknown key backend.model_options.{key} for model {name}; valid keys: {valid}")
        default = keywords[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(default, float) else type(value) is type(default)
        if not ok:
            raise AlabError(f"backend.model_options.{key} must be {type(default).__name__}, got {value!r}")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    generator: torch.Generator,
    task: str = "classification",
    *,
    init: str = "torch",
    options: Mapping[str, Any] | None = None,
) -> Network:
    """The named network ('auto': the Gal CNN for 1x28x28 images, else the MLP), initialized from `generator`.

    For task "regression" the head has 2 outputs (mean, raw variance), whatever `num_classes` says,
    and 'auto' is the MLP with dropout .1. `init`: "torch" (PyTorch's defaults), "glorot" (Glorot & Bengio's, today's Keras) or "keras0.3";
    `options`: the factory's keywords (`model_options` of a backend), checked by `check_model_options`.
    """
    if name == "auto":
        name = "mlp_regression" if task == "regression" else "gal_cnn" if tuple(input_shape) == (1, 28, 28) else "mlp"
    options = dict(options or {})
    check_model_options(name, options)
    if init not in INITIALIZATIONS:
        raise AlabError(f"backend.init must be one of {', '.join(INITIALIZATIONS)}, got {init!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    network = MODELS.get(name)(tuple(input_shape), 2 if task == "regression" else num_classes, **options)
    network.task = task
    INITIALIZATIONS[init](network, generator)
    return network
