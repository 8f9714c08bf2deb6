"""Networks by name, each split into a deterministic trunk and a stochastic (dropout) head.

The trunk is everything before the first stochastic layer; it runs once per input. The head is a
stack of dense layers, each with dropout on its input. At scoring time a posterior sample is a whole
network (Kirsch et al. 2019, "consistent MC dropout"): K dropout masks are drawn once and shared by
every pool item. A mask on a layer's input equals masking that layer's weight columns, so the K
masks fold into K weight matrices and the K heads run as one wide matrix product.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alab.errors import AlabError
from alab.regression import gaussian_nll_loss
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


def dropout_mask(shape: Sequence[int], p: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """Inverted-dropout mask: 1/(1-p) where kept, 0 where dropped; drawn on the CPU for reproducibility."""
    keep = torch.rand(tuple(shape), generator=generator) >= p
    return (keep.to(torch.float32) / (1.0 - p)).to(device)


# (weight_K_Out_In, bias_K_Out): one dense layer of each of K networks
StackedLayer = tuple[Tensor, Tensor]


class DropoutHead(nn.Module):
    """Dense layers with dropout on each layer's input: h <- act(W_i (m_i * h) + b_i), ReLU between."""

    def __init__(self, dims: Sequence[int], dropout: Sequence[float]) -> None:
        super().__init__()
        if len(dropout) != len(dims) - 1:
            raise ValueError("one dropout rate per dense layer")
        self.dropout = tuple(float(p) for p in dropout)
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    def forward(self, features_N_D: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Logits [N, C]; with a generator, an independent dropout mask per item (training)."""
        h_N_D = features_N_D
        for i, (p, layer) in enumerate(zip(self.dropout, self.layers)):
            if generator is not None and p > 0:
                h_N_D = h_N_D * dropout_mask(h_N_D.shape, p, generator, h_N_D.device)
            h_N_D = layer(h_N_D)
            if i < len(self.layers) - 1:
                h_N_D = torch.relu(h_N_D)
        return h_N_D

    def sample_masks(self, k: int, generator: torch.Generator) -> list[Tensor]:
        """K masks per layer, each [K, D_in], shared by every item scored with them."""
        device = self.layers[0].weight.device
        return [dropout_mask((k, layer.in_features), p, generator, device) for p, layer in zip(self.dropout, self.layers)]

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


def stacked_dense_forward(features_N_D: Tensor, layers: Sequence[StackedLayer], *, batched: bool | None = None) -> Tensor:
    """Logits [K, N, C] of K dense stacks h <- relu(W_k h + b_k) (no ReLU after the last) on shared inputs.

    The first layer of all K networks is one wide product [N, D] @ [D, K*H] (the weights, stacked
    [K*H, D] and contiguous, are read transposed by the BLAS: no copy); the later, small layers are
    one product per network on the CPU, where torch's batched product was far slower than K calls
    of the plain one at these shapes (K=20, 256x128 @ 128x10: 15 ms against 0.4 ms), and one batched
    product elsewhere. `batched` forces a branch (True: the batched product, False: one product per
    network) so that both are tested on any device; None chooses by device. This is what any backend
    whose K posterior samples share a trunk (MC dropout masks, weight draws of a stochastic head,
    heads of an ensemble) should run.
    """
    (weight_K_H_D, bias_K_H), *rest = layers
    K, H, D = weight_K_H_D.shape
    N = features_N_D.shape[0]
    dtype = features_N_D.dtype
    if batched is None:
        batched = features_N_D.device.type != "cpu"
    # [N, D] @ [D, K*H] + [K*H] -> [N, K*H]: the bias is added by the GEMM (beta = 1)
    h_N_KH = torch.addmm(bias_K_H.reshape(K * H).to(dtype), features_N_D, weight_K_H_D.reshape(K * H, D).T.to(dtype))
    h_K_N_H = h_N_KH.view(N, K, H).transpose(0, 1)  # a strided view, no copy
    for weight_K_O_H, bias_K_O in rest:
        h_K_N_H = torch.relu_(h_K_N_H)
        weight_K_H_O = weight_K_O_H.transpose(1, 2).to(dtype)
        if not batched:
            out_K_N_O = h_K_N_H.new_empty((K, N, weight_K_O_H.shape[1]))
            for k in range(K):  # [N, H] @ [H, O] + [O] -> [N, O]; a row stride of K*H is fine for the BLAS
                torch.addmm(bias_K_O[k].to(dtype), h_K_N_H[k], weight_K_H_O[k], out=out_K_N_O[k])
            h_K_N_H = out_K_N_O
        else:  # [K, N, H] @ [K, H, O] + [K, 1, O] -> [K, N, O]
            h_K_N_H = torch.baddbmm(bias_K_O[:, None, :].to(dtype), h_K_N_H, weight_K_H_O)
    return h_K_N_H


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
    """A deterministic trunk followed by a dropout head, for one task.

    classification: the head gives C logits; `output` is log_softmax, `loss` the cross-entropy.
    regression: the head gives 2 numbers, a mean and a raw variance (s2 = softplus(raw) + floor,
    `alab.regression.gaussian_params`); `output` is the raw pair, `loss` the Gaussian NLL
    (a heteroscedastic model, Nix & Weigend 1994). Backends stay task-agnostic by training with
    `loss` and sampling `output`: [K, N, C] log-probabilities or [K, N, 2] (mean, raw variance).
    """

    def __init__(self, trunk: nn.Module, head: DropoutHead, task: str = "classification") -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.trunk = trunk
        self.head = head
        self.task = task

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.head(self.trunk(x), generator)

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


@MODELS.register("gal_cnn")
def gal_cnn(input_shape: tuple[int, ...], num_classes: int) -> Network:
    """Gal et al. 2017's CNN for 28x28 images: conv32-4, conv32-4, maxpool 2, dropout .25, dense 128, dropout .5."""
    channels, height, width = input_shape
    trunk = nn.Sequential(
        nn.Conv2d(channels, 32, 4), nn.ReLU(), nn.Conv2d(32, 32, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
    )
    flat = 32 * ((height - 6) // 2) * ((width - 6) // 2)
    return Network(trunk, DropoutHead([flat, 128, num_classes], [0.25, 0.5]))


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128, p: float = 0.5) -> Network:
    """An MLP for vectors (and flattened small images): dense 128, dropout .5, dense 128, dropout .5."""
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU())
    return Network(trunk, DropoutHead([hidden, hidden, num_classes], [p, p]))


@MODELS.register("mlp_regression")
def mlp_regression(input_shape: tuple[int, ...], num_outputs: int) -> Network:
    """The MLP with lighter dropout (.1), as Gal & Ghahramani 2016 use for regression; 'auto' for regression data."""
    return mlp(input_shape, num_outputs, p=0.1)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, generator: torch.Generator, task: str = "classification"
) -> Network:
    """The named network ('auto': the Gal CNN for 1x28x28 images, else the MLP), initialized from `generator`.

    For task "regression" the head has 2 outputs (mean, raw variance), whatever `num_classes` says,
    and 'auto' is the MLP with dropout .1.
    """
    if name == "auto":
        name = "mlp_regression" if task == "regression" else "gal_cnn" if tuple(input_shape) == (1, 28, 28) else "mlp"
    factory = MODELS.get(name)
    if name == "gal_cnn" and len(input_shape) != 3:
        raise AlabError(f"model gal_cnn needs image inputs (channels, height, width), got shape {input_shape}; use model = 'mlp'")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    network = factory(tuple(input_shape), 2 if task == "regression" else num_classes)
    network.task = task
    init_parameters(network, generator)
    return network
