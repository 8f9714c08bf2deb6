"""MC dropout (Gal & Ghahramani 2016): dropout at test time as approximate variational inference.

Retrained from scratch each round, as in Gal, Islam & Ghahramani 2017 (warm start is an option).
The L2 penalty is scaled to the labeled set, lambda = c / N (Gal 2017's code), the prior-length-scale
form of the dropout posterior's KL term. At scoring time K dropout masks are drawn once and shared by
every item: K whole networks, folded into the head's weights (see `alab.models`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from alab.backends.base import BACKENDS, SCHEDULES, SampledNetworks, epoch_batches, gradient_embedding, random_shift
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import ConvDropoutHead, Network, build_model, inference_trunk, mask_from_uniform


WEIGHT_DECAY_ON = ("all", "head_first_weight")


@dataclass(frozen=True)
class MCDropoutParams:
    """Hyperparameters of the MC dropout backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | kirsch_cnn | mlp | mlp_regression | auto (gal_cnn for 1x28x28 images, mlp_regression for regression, else mlp)
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own keywords, e.g. { kernel_size = 3 } for gal_cnn
    init: str = "torch"  # torch (PyTorch's defaults) | glorot (Glorot-uniform, zero biases) | keras0.3 (Keras 0.3's: a kernel's fan-out is its filters)
    epochs: int = 50  # passes over the labeled set ...
    min_steps: int = 1000  # ... but at least this many gradient steps (small labeled sets)
    batch_size: int = 64
    schedule: str = "full"  # minibatches: full (floor(N/B) full batches an epoch) | keras (ceil(N/B), the last ragged) | resampled
    epoch_samples: int = 5056  # schedule = "resampled": an epoch is this many draws of the labeled set (Kirsch et al. 2019)
    early_stopping: int = 0  # patience in epochs on the validation set's accuracy (0: off; needs validation = N)
    augment_shift: int = 0  # images: each training image shifted by up to this many pixels each step (0: off)
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.1  # c in the L2 penalty (c / N) * ||w||^2, N = labeled set size
    weight_decay_on: str = "all"  # all weights and biases | head_first_weight (Gal et al.'s code: the Dense-128 kernel)
    warm_start: bool = False  # continue from last round's weights instead of a fresh initialization
    masks: str = "shared"  # scoring: K masks shared by every item (K whole networks) | per_item

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size", "early_stopping", "augment_shift"):
            if getattr(self, name) < 0 or (name == "batch_size" and self.batch_size == 0):
                raise AlabError(f"backend.{name} must be positive, got {getattr(self, name)}")
        if self.masks not in ("shared", "per_item"):
            raise AlabError(f"backend.masks must be 'shared' or 'per_item', got {self.masks!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise AlabError("backend.lr must be > 0 and backend.weight_decay >= 0")
        if self.schedule not in SCHEDULES:
            raise AlabError(f"backend.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epoch_samples < 1:
            raise AlabError(f"backend.epoch_samples must be at least 1, got {self.epoch_samples}")
        if self.weight_decay_on not in WEIGHT_DECAY_ON:
            raise AlabError(f"backend.weight_decay_on must be one of {', '.join(WEIGHT_DECAY_ON)}, got {self.weight_decay_on!r}")
        if self.early_stopping and not self.epochs:
            raise AlabError("backend.early_stopping needs backend.epochs > 0: the most epochs to train")


def _parameter_groups(network: Network, params: MCDropoutParams, n: int) -> list[dict[str, Any]]:
    """Adam's parameter groups: L2 (c/N)||w||^2 on every weight, or on the head's first dense kernel only.

    Keras' l2(c/N) adds (c/N) * w^2 to the loss; Adam's weight_decay adds wd * w to the gradient,
    so wd = 2c/N. Gal et al.'s code puts it on the Dense-128 kernel alone (`W_regularizer`).
    """
    decay = 2 * params.weight_decay / n
    if params.weight_decay_on == "all":
        return [{"params": list(network.parameters()), "weight_decay": decay}]
    first = network.head.dense.layers[0] if isinstance(network.head, ConvDropoutHead) else network.head.layers[0]
    rest = [p for p in network.parameters() if p is not first.weight]
    return [{"params": [first.weight], "weight_decay": decay}, {"params": rest, "weight_decay": 0.0}]


def _validation_score(network: Network, validation: tuple[Tensor, Tensor]) -> float:
    """The deterministic network's accuracy on the validation set (regression: minus its mean loss)."""
    x_V, y_V = validation
    network.eval()
    with torch.no_grad():
        raw_V_O = torch.cat([network(x_V[i : i + 1024]) for i in range(0, len(x_V), 1024)])
    network.train()
    if network.task == "classification":
        return float((raw_V_O.argmax(dim=1) == y_V).double().mean())
    return -float(network.loss(raw_V_O, y_V))


def train_classifier(
    network: Network,
    x_N: Tensor,
    y_N: Tensor,
    params: MCDropoutParams,
    generator: torch.Generator,
    *,
    validation: tuple[Tensor, Tensor] | None = None,
    desc: str = "train",
) -> None:
    """Adam on the network's mean loss (cross-entropy, or Gaussian NLL for regression) plus (c/N)||w||^2.

    Minibatches by `params.schedule` (`epoch_batches`), dropout masks per item, both from `generator`;
    with `params.augment_shift` = s, each batch's images shifted by up to s pixels (`random_shift`), also
    from `generator`.
    With `params.early_stopping` = P and a validation set: after each epoch the deterministic
    network's validation accuracy; training stops after P epochs without a better one and the best
    epoch's weights are kept (Kirsch et al. 2019's code: ignite's EarlyStopping, patience 3,
    restoring the best).
    """
    n = x_N.shape[0]
    optimizer = torch.optim.Adam(_parameter_groups(network, params, n), lr=params.lr)
    network.train()
    epochs = epoch_batches(
        n, params.batch_size, epochs=params.epochs, min_steps=params.min_steps, generator=generator, device=x_N.device,
        schedule=params.schedule, epoch_samples=params.epoch_samples,
    )  # fmt: skip
    stopping = validation is not None and params.early_stopping > 0
    best_score, best_state, patience = -math.inf, None, params.early_stopping
    for epoch in tqdm(epochs, desc=desc, leave=False, disable=None, mininterval=0.5):
        for batch in epoch:
            x_B = x_N[batch] if not params.augment_shift else random_shift(x_N[batch], params.augment_shift, generator)
            loss = network.loss(network(x_B, generator), y_N[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if stopping:
            score = _validation_score(network, validation)  # type: ignore[arg-type]
            if score > best_score:
                best_score, best_state, patience = score, copy.deepcopy(network.state_dict()), params.early_stopping
            else:
                patience -= 1
                if patience == 0:
                    break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()


def stackable(network: Network, params: MCDropoutParams, validation: tuple[Tensor, Tensor] | None) -> bool:
    """Whether this fit can train in a stack (`train_stacked`) to the same bits in a stack of any size.

    Not for regression (torch's Gaussian NLL checks its variances with a branch, which vmap refuses),
    not with early stopping (the networks would stop at different epochs), nor with convolutions:
    vmap runs M convolutions as one grouped convolution, whose sums depend on M (measured: the Gal
    and Kirsch CNNs differ in the last digits between a stack of 1 and of 3), so a cell resumed in
    another group would not continue its curve. On this CPU stacking them gained nothing anyway
    (benchmarks/ensemble_training.py: 1.11x slower than one after another).
    """
    has_convolution = any(isinstance(layer, torch.nn.Conv2d) for layer in network.modules())
    stops_early = validation is not None and params.early_stopping > 0
    return network.task == "classification" and not has_convolution and not stops_early


def train_stacked(
    networks: Sequence[Network], xs: Sequence[Tensor], ys: Sequence[Tensor], params: MCDropoutParams, generators: Sequence[torch.Generator]
) -> None:
    """`train_classifier` of M networks of one architecture at once, each on its own data (the same N)
    and from its own generator, as one stacked model (`torch.func.vmap` over `functional_call`).

    Network m draws its minibatch order, shifts and dropout masks from generators[m] in exactly the
    order `train_classifier` draws them, so it sees the same batches and masks as when it trains
    alone; the stacked loss is sum_m loss_m, whose gradient in network m's weights is loss_m's, and
    Adam is elementwise. Stacking changes only how the products are batched: see `alab.lockstep`
    for what that leaves bit-identical. Masks are drawn into one [M, ...] buffer per layer (a draw per
    network, the thresholding once for all), the cost that stays serial in M. Trains on one thread.
    """
    M, n = len(networks), xs[0].shape[0]
    base = networks[0]
    stacked, buffers = stack_module_state(list(networks))  # {name: [M, ...]} leaves that require grad
    names = {id(t): name for name, t in base.named_parameters()}
    groups = [
        {**group, "params": [stacked[names[id(t)]] for t in group["params"]]} for group in _parameter_groups(base, params, n)
    ]  # fmt: skip
    optimizer = torch.optim.Adam(groups, lr=params.lr)  # not fused: its CPU kernel rounds a network differently in stacks of other sizes
    streams = [
        itertools.chain.from_iterable(epoch_batches(
            n, params.batch_size, epochs=params.epochs, min_steps=params.min_steps, generator=g, device=xs[0].device,
            schedule=params.schedule, epoch_samples=params.epoch_samples,
        ))
        for g in generators
    ]  # fmt: skip

    def loss_of_one(weights: dict[str, Tensor], state: dict[str, Tensor], x_B: Tensor, y_B: Tensor, masks: list[Tensor]) -> Tensor:
        return base.loss(functional_call(base, (weights, state), (x_B,), {"masks": masks}), y_B)

    loss_M = vmap(loss_of_one)
    base.train()
    with _one_thread():
        for batches in zip(*streams):
            x_M_B = torch.stack([
                x[batch] if not params.augment_shift else random_shift(x[batch], params.augment_shift, g)
                for x, batch, g in zip(xs, batches, generators)
            ])  # fmt: skip
            y_M_B = torch.stack([y[batch] for y, batch in zip(ys, batches)])
            draws = base.head.mask_draws(len(batches[0]))
            uniforms = [torch.empty((M, *shape)) for shape, _, _ in draws]
            for m, g in enumerate(generators):  # network m's draws, in its own order (one step's masks follow its shifts)
                for uniform in uniforms:
                    torch.rand(uniform.shape[1:], generator=g, out=uniform[m])
            masks = [mask_from_uniform(u, p, group).to(x_M_B.device) for u, (_, p, group) in zip(uniforms, draws)]
            loss = loss_M(stacked, buffers, x_M_B, y_M_B, masks).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        for m, network in enumerate(networks):
            for name, tensor in network.named_parameters():
                tensor.copy_(stacked[name][m])
            network.eval()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread (this thread's setting), restored after: on two threads one network's product
    alone is split over them while a stack's run one a thread, and their sums differ in the last digits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# What trains a cell's network: `train_classifier` here, a lockstep group's stacked fit in `alab.lockstep`
# (set per thread, one thread a cell). Called as trainer(network, x, y, params, generator, validation=...).
TRAINER: ContextVar[Callable[..., None]] = ContextVar("mc_dropout_trainer", default=train_classifier)


class MCDropoutBackend:
    """MC dropout classifier: a `Network` trained with dropout, sampled by K shared dropout masks.

    `validation` (x [V, ...], targets [V]): the run's validation set, for `early_stopping`.
    """

    def __init__(
        self,
        params: MCDropoutParams,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        device: torch.device,
        task: str = "classification",
        validation: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        if params.augment_shift and len(self.input_shape) != 3:
            raise AlabError(f"backend.augment_shift shifts images [C, H, W]; these inputs have shape {list(self.input_shape)}: remove it")
        if params.early_stopping and validation is None:
            raise AlabError("backend.early_stopping needs a validation set: set validation = N in the run (Kirsch et al. 2019 use 1024)")
        self.validation = None if validation is None else (validation[0].to(device), validation[1].to(device))
        self.network_: Network | None = None
        self.trunk_: Callable[[Tensor], Tensor] | None = None  # the fitted trunk's inference copy, for `embed`
        self._build(torch.Generator())  # a bad model, option or shape: refused now, before a run starts

    def _build(self, generator: torch.Generator) -> Network:
        p = self.params
        return build_model(p.model, self.input_shape, self.num_classes, generator, self.task, init=p.init, options=p.model_options)

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> MCDropoutBackend:
        if self.network_ is None or not self.params.warm_start:
            self.network_ = self._build(generator).to(self.device)
        self.trunk_ = None
        TRAINER.get()(self.network_, x.to(self.device), y.to(self.device), self.params, generator, validation=self.validation)
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """K networks given by K dropout masks, shared by every item (or fresh masks per item).

        Shared masks are folded into the head's weights once, here (`DropoutHead.masked`,
        `ConvDropoutHead.masked`); each call then runs the trunk once (channels-last) and the K heads
        as one wide product.
        """
        network = self._fitted()
        trunk = inference_trunk(network.trunk)
        if self.params.masks == "per_item":

            @torch.no_grad()
            def per_item_log_probs_K_N_C(x: Tensor) -> Tensor:
                features = trunk(x.to(self.device))
                logits_K_N_C = torch.stack([network.head(features, generator) for _ in range(k)])
                return network.output(logits_K_N_C.float())

            return per_item_log_probs_K_N_C
        with torch.no_grad():  # samples of the posterior predict; they are never trained
            heads_K = network.head.masked(network.head.sample_masks(k, generator))

        @torch.no_grad()
        def log_probs_K_N_C(x: Tensor) -> Tensor:
            return network.output(heads_K(trunk(x.to(self.device))).float())

        return log_probs_K_N_C  # regression: [K, N, 2] (mean, raw variance)

    def mean_network(self) -> SampledNetworks:
        """The deterministic network (dropout off, the weights as trained: inverted dropout needs no rescaling), as K = 1.

        What Keras' `model.evaluate` measures, and so what Gal et al. 2017's test accuracies are.
        """
        network = self._fitted()
        trunk = inference_trunk(network.trunk)

        @torch.no_grad()
        def log_probs_1_N_C(x: Tensor) -> Tensor:
            return network.output(network.head(trunk(x.to(self.device))).float())[None]

        return log_probs_1_N_C

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The deterministic network's penultimate features (dropout off): the last dense layer's input, [N, D]."""
        network = self._fitted()
        return network.embed(x.to(self.device), self._trunk())[0].float().cpu()

    @torch.no_grad()
    def gradient_embed(self, x: Tensor) -> Tensor:
        """The deterministic network's last-layer gradient at its predicted class (`gradient_embedding`): [N, C*D]."""
        features_N_D, logits_N_C = self._fitted().embed(x.to(self.device), self._trunk())
        return gradient_embedding(torch.log_softmax(logits_N_C.float(), dim=-1)[None], features_N_D.float()[None]).cpu()

    def _trunk(self) -> Callable[[Tensor], Tensor]:
        """The fitted trunk's inference copy, made once per fit (embeddings run chunk by chunk)."""
        if self.trunk_ is None:
            self.trunk_ = inference_trunk(self._fitted().trunk)
        return self.trunk_

    def state_dict(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "network": self._fitted().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network_ = self._build(torch.Generator().manual_seed(0)).to(self.device)  # weights are overwritten just below
        self.network_.load_state_dict(state["network"])
        self.network_.eval()
        self.trunk_ = None

    def _fitted(self) -> Network:
        if self.network_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_


@BACKENDS.register("mc_dropout", "MC dropout (Gal & Ghahramani 2016): K shared dropout masks, retrained each round")
def make_mc_dropout(
    params: dict[str, Any],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    task: str = "classification",
    validation: tuple[Tensor, Tensor] | None = None,
) -> MCDropoutBackend:
    return MCDropoutBackend(
        from_mapping(MCDropoutParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device,
        task=task, validation=validation,
    )  # fmt: skip
