"""What the weight-space posteriors (laplace, swag, sgmcmc, hmc) share: dropout-free networks, the
penultimate features, a flat view of the weights, and K networks from stacked weights.

A posterior sample here is a set of weights. K samples of the whole network are stacked along a
leading axis (`Stacked`: name -> [K, *shape]) and scored in one call: for an MLP (trunk Flatten,
Linear, ReLU; a dense head) as K dense stacks whose first layer is one wide product
(`stacked_dense_forward`), for any other network with one `vmap` of `functional_call` (as the
ensemble). Samples of the last layer alone share everything before it, which runs once per chunk.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alab.backends.base import SampledNetworks, gradient_embedding
from alab.backends.ensemble import stacked_logits
from alab.models import ConvDropoutHead, DropoutHead, Network, build_model, inference_trunk, stacked_dense_forward

Stacked = dict[str, Tensor]  # parameter name -> [K, *shape]


def dropout_free_network(
    model: str, input_shape: tuple[int, ...], num_classes: int, generator: torch.Generator, task: str = "classification",
    *, init: str = "torch", options: Mapping[str, Any] | None = None,
) -> Network:  # fmt: skip
    """`alab.models.build_model` with every dropout rate set to 0: a plain network whose weights carry the posterior."""
    network = build_model(model, input_shape, num_classes, generator, task, init=init, options=options)
    for module in network.modules():
        if isinstance(module, DropoutHead):
            module.dropout = (0.0,) * len(module.dropout)
        elif isinstance(module, ConvDropoutHead):
            module.dropout = 0.0
    return network


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def penultimate(network: Network, x: Tensor) -> Tensor:
    """The last layer's input features [N, D]: the deterministic network (dropout off) up to its last dense layer."""
    return network.embed(x)[0]


def gradient_embed(network: Network, x: Tensor) -> Tensor:
    """The deterministic network's last-layer gradient at its predicted class, [N, C*D] (`gradient_embedding`)."""
    features_N_D, logits_N_C = network.embed(x)
    return gradient_embedding(torch.log_softmax(logits_N_C.float(), dim=-1)[None], features_N_D.float()[None])


def last_layer(network: Network) -> nn.Linear:
    head = network.head
    return (head.dense if isinstance(head, ConvDropoutHead) else head).layers[-1]


def last_layer_networks(network: Network, weight_K_O_D: Tensor, bias_K_O: Tensor, device: torch.device) -> SampledNetworks:
    """K networks that share everything but the last layer: features once per chunk, then one [N, D] @ [D, K*O]."""
    trunk = inference_trunk(network.trunk)
    layers = [(weight_K_O_D.detach().contiguous(), bias_K_O.detach().contiguous())]

    @torch.no_grad()
    def outputs_K_N_O(x: Tensor) -> Tensor:
        features_N_D = network.head.penultimate(trunk(x.to(device)))
        return network.output(stacked_dense_forward(features_N_D, layers).float())

    return outputs_K_N_O


def dense_layer_names(network: Network) -> list[str] | None:
    """The names of an MLP's dense layers in order (trunk Flatten, Linear, ReLU; a `DropoutHead`), else None."""
    trunk = list(network.trunk)
    plain = [type(m) for m in trunk] == [nn.Flatten, nn.Linear, nn.ReLU] and isinstance(network.head, DropoutHead)
    return ["trunk.1", *(f"head.layers.{i}" for i in range(len(network.head.layers)))] if plain else None


def stacked_networks(network: Network, stacked: Stacked, device: torch.device) -> SampledNetworks:
    """K whole networks from stacked weights: log-probs [K, N, C] (regression: [K, N, 2]).

    An MLP runs as K dense stacks (`stacked_dense_forward`: one wide first product); anything else
    as one vmapped `functional_call` over the K weight sets (`stacked_logits`).
    """
    stacked = {name: t.detach().to(device).contiguous() for name, t in stacked.items()}
    names = dense_layer_names(network)
    if names is not None:
        layers = [(stacked[f"{name}.weight"], stacked[f"{name}.bias"]) for name in names]

        @torch.no_grad()
        def dense_K_N_O(x: Tensor) -> Tensor:
            return network.output(stacked_dense_forward(x.to(device).flatten(1), layers).float())

        return dense_K_N_O
    base = copy.deepcopy(network).to("meta")

    @torch.no_grad()
    def vmapped_K_N_O(x: Tensor) -> Tensor:
        return network.output(stacked_logits(base, stacked, x.to(device)).float())

    return vmapped_K_N_O


def sample_network(network: Network, stacked: Stacked, index: int) -> Network:
    """A copy of `network` holding sample `index` of `stacked` (for one network's features: `embed`)."""
    copied = copy.deepcopy(network)
    copied.load_state_dict({name: t[index] for name, t in stacked.items()})
    return copied.eval()


def stack_states(states: Sequence[Mapping[str, Tensor]]) -> Stacked:
    """K parameter dicts -> one dict of [K, *shape] tensors."""
    return {name: torch.stack([state[name] for state in states]) for name in states[0]}


class Flat:
    """A network's parameters as one vector [P] and back: the layout (names, shapes) in `named_parameters` order."""

    def __init__(self, network: nn.Module) -> None:
        self.names = [name for name, _ in network.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in network.named_parameters()]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.size = sum(self.sizes)

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """name -> [..., *shape] -> [..., P]; leading axes (chains, samples) are kept."""
        lead = params[self.names[0]].shape[: params[self.names[0]].ndim - len(self.shapes[0])]
        return torch.cat([params[name].reshape(*lead, -1) for name in self.names], dim=-1)

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """[..., P] -> name -> [..., *shape] (views)."""
        lead = w.shape[:-1]
        return {name: part.view(*lead, *shape) for name, shape, part in zip(self.names, self.shapes, w.split(self.sizes, dim=-1))}
