"""Training protocols for the two-layer networks (only W is trained).

Protocols (``TrainConfig.protocol``):

* ``paper``: Adam, lr 1e-3, batch 128, 500 epochs, weight decay 1e-3 (Adam's coupled L2,
  the paper's "L2 λ = 1e-3"), init N(0, 0.01²).
* ``lazy``: full-batch gradient descent (lr 1.0, 500 steps, no weight decay) under the
  standard NTK initialisation W ~ N(0, 1): the regime where NTK theory applies.

Losses (``TrainConfig.loss``; the paper states CE for 10 classes and MSE for binary):

* ``ce``: K = num_classes outputs, cross-entropy, fixed ±1 output weights per class.
* ``mse-ovr``: K outputs, one-vs-rest targets (+1 for the true class, −1 otherwise), squared
  error averaged over outputs.
* ``mse``: binary only, one output, squared error against ±1 labels (class index 1 -> +1).
* ``auto``: ``ce`` for > 2 classes, ``mse`` for 2 classes.

Models with trainable feature parameters (``param_names`` and ``init_params``, e.g. qkv-attn's
projections) are trained jointly with W by the same optimiser (same lr and weight decay); their
current values live in the state under their names (so every consumer of ``features(x, state)``
works unchanged), the initial values in ``TrainedModel.params0``. Parameter-free models are
unaffected.

Per-sample losses are unreduced; the training objective is their batch mean. Mini-batches are
drawn by a CPU ``torch.Generator`` seeded with ``seed + 1`` (the network uses ``seed``), so a
run is a pure function of its config on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from malleability.empirics.models import FeatureModel, State, get_model, unit
from malleability.empirics.network import TwoLayerReLU
from malleability.errors import MalleabilityError, require

PROTOCOLS = ("paper", "lazy")
LOSSES = ("auto", "ce", "mse-ovr", "mse")
DTYPES = ("float32", "float64")
_PROTOCOL_DEFAULTS = {
    "paper": {"epochs": 500, "lr": 1e-3, "batch_size": 128, "weight_decay": 1e-3, "init": "paper", "init_std": 0.01,
              "optimizer": "adam"},
    "lazy": {"epochs": 500, "lr": 1.0, "batch_size": None, "weight_decay": 0.0, "init": "ntk", "init_std": 1.0,
             "optimizer": "gd"},
}


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained; None fields take the protocol's default (see ``resolved()``)."""

    protocol: str = field(default="paper", metadata={"help": "'paper' (Adam, paper settings) | 'lazy' (full-batch GD, NTK init)"})
    epochs: int | None = field(default=None, metadata={"help": "None -> protocol default (500)"})
    loss: str = field(default="auto", metadata={"help": "'ce' | 'mse-ovr' | 'mse' | 'auto' (ce for >2 classes, mse for 2)"})
    seed: int = field(default=0, metadata={"help": "seeds the init (seed) and the batch order (seed + 1)"})
    device: str = field(default="cpu", metadata={"help": "'cpu' | 'cuda' (resolve 'auto' with resolve_device)"})
    dtype: str = field(default="float32", metadata={"help": "'float32' | 'float64'"})
    lr: float | None = field(default=None, metadata={"help": "None -> protocol default"})
    batch_size: int | None = field(default=None, metadata={"help": "None -> protocol default (lazy: full batch)"})
    weight_decay: float | None = field(default=None, metadata={"help": "None -> protocol default"})
    init_std: float | None = field(default=None, metadata={"help": "std of W at init; None -> protocol default"})

    def __post_init__(self):
        require(self.protocol in PROTOCOLS, f"unknown protocol {self.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        require(self.loss in LOSSES, f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        require(self.dtype in DTYPES, f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        require(self.epochs is None or int(self.epochs) >= 0, f"epochs must be >= 0, got {self.epochs}")
        require(self.batch_size is None or int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr is None or float(self.lr) > 0, f"lr must be > 0, got {self.lr}")
        require(self.weight_decay is None or float(self.weight_decay) >= 0, "weight_decay must be >= 0")
        require(self.init_std is None or float(self.init_std) > 0, "init_std must be > 0")
        require(int(self.seed) >= 0, f"seed must be >= 0, got {self.seed}")

    def resolved(self) -> dict:
        """Every setting with the protocol defaults filled in (JSON-ready)."""
        d = dict(_PROTOCOL_DEFAULTS[self.protocol])
        for key in ("epochs", "lr", "batch_size", "weight_decay", "init_std"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d.update(protocol=self.protocol, loss=self.loss, seed=int(self.seed), device=self.device, dtype=self.dtype)
        return d


def resolve_device(spec: str) -> str:
    """'auto' -> 'cuda' if available else 'cpu'; 'cuda' without a GPU is a one-line error."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        require(torch.cuda.is_available(), "--device cuda requested but no CUDA device is available")
        return spec
    raise MalleabilityError(f"unknown device {spec!r}: choose auto, cpu or cuda")


def resolve_loss(loss: str, num_classes: int) -> str:
    require(int(num_classes) >= 2, f"need at least two classes, got {num_classes}")
    if loss == "auto":
        return "ce" if num_classes > 2 else "mse"
    if loss == "mse":
        require(num_classes == 2, f"loss 'mse' (±1 labels) needs 2 classes, got {num_classes}; use ce or mse-ovr")
    return loss


def num_outputs_for(loss: str, num_classes: int) -> int:
    return 1 if resolve_loss(loss, num_classes) == "mse" else int(num_classes)


def targets_for(loss: str, y: torch.Tensor, num_classes: int, dtype=torch.float64) -> torch.Tensor:
    """Regression targets in output space: ±1 (n, 1) for mse; one-vs-rest ±1 (n, K) otherwise."""
    loss = resolve_loss(loss, num_classes)
    if loss == "mse":
        return (2.0 * y.to(dtype) - 1.0)[:, None]
    return 2.0 * F.one_hot(y.long(), num_classes).to(dtype) - 1.0


def make_loss_fn(loss: str, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(outputs (N, K), labels (N,)) -> per-sample loss (N,)."""
    loss = resolve_loss(loss, num_classes)
    if loss == "ce":
        return lambda out, y: F.cross_entropy(out, y.long(), reduction="none")

    def mse(out, y):
        t = targets_for(loss, y, num_classes, dtype=out.dtype)
        return ((out - t) ** 2).mean(dim=1)

    return mse


OUTPUT_WEIGHTS = "output_weights"  # state key of the network's a, for models with feature parameters


def param_names(model: FeatureModel) -> tuple[str, ...]:
    """Names of the model's trainable feature parameters (empty for a parameter-free model)."""
    return tuple(getattr(model, "param_names", ()) or ())


@dataclass
class TrainedModel:
    """A trained network with everything needed to recompute its NTK and features.

    ``params`` / ``params0``: the model's trained / initial feature parameters (empty when it has
    none). A state given without them (e.g. a refit on new rows) gets the trained ones merged in,
    and, for such a model, the network's fixed output weights under :data:`OUTPUT_WEIGHTS` (the NTK
    over the feature parameters depends on them; consumers that receive only W and the state,
    like the influence, find them there).
    """

    model: FeatureModel
    net: TwoLayerReLU
    W0: torch.Tensor
    state: State
    config: TrainConfig
    history: list[float]
    num_classes: int = 2
    loss: str = "mse"  # the resolved loss actually used
    params: dict = field(default_factory=dict)
    params0: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.params:
            extra = {**self.params, OUTPUT_WEIGHTS: self.net.a}
            if any(k not in self.state for k in extra):
                self.state = {**self.state, **{k: v for k, v in extra.items() if k not in self.state}}

    @property
    def kind(self) -> str:
        return self.model.name

    def features(self, x_unit: torch.Tensor) -> torch.Tensor:
        return self.model.features(x_unit, self.state)

    def logits_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``net(features(unit(pixels)))``, differentiable w.r.t. the pixels."""
        return self.net(self.features(unit(pixels)))

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return make_loss_fn(self.loss, self.num_classes)

    def predict(self, x_unit: torch.Tensor) -> torch.Tensor:
        """Class predictions (N,) from unit rows: argmax, or the sign for the scalar ±1 output."""
        with torch.no_grad():
            out = self.net(self.features(x_unit.to(self.net.W.dtype).to(self.net.W.device)))
        return (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(dim=1)


class FusedAdam:
    """Adam with coupled weight decay: torch's fused kernel called directly, one call per step.

    The same update as ``torch.optim.Adam(params, lr, weight_decay=wd, fused=True)`` (the same
    kernel on the same moments and float32 step counters; tested bitwise), without
    ``Optimizer.step``'s per-step bookkeeping (hooks, profiler records, grouping), which on one
    CPU thread cost more than the kernel itself at the paper's widths (bench training).
    """

    def __init__(self, params, *, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if len(self.params) == 1:  # the common case (W alone): no list building, one counter update
            p = self.params[0]
            if p.grad is None:
                return
            self.steps[0].add_(1)
            torch._fused_adam_([p], [p.grad], self.exp_avgs, self.exp_avg_sqs, [], self.steps, amsgrad=False,
                               lr=self.lr, beta1=self.beta1, beta2=self.beta2, weight_decay=self.weight_decay,
                               eps=self.eps, maximize=False, grad_scale=None, found_inf=None)
            return
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = lambda xs: [xs[i] for i in live]  # noqa: E731
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(pick(self.params), [self.params[i].grad for i in live], pick(self.exp_avgs),
                           pick(self.exp_avg_sqs), [], steps, amsgrad=False, lr=self.lr, beta1=self.beta1,
                           beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                           grad_scale=None, found_inf=None)


def _fused_adam_works(device) -> bool:
    key = str(device)
    if key not in _FUSED_ADAM_OK:
        try:
            p = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
            p.grad = torch.ones_like(p)
            FusedAdam([p], lr=0.5).step()
            _FUSED_ADAM_OK[key] = bool(torch.all(p.detach() < 0))
        except (RuntimeError, TypeError, AttributeError, NotImplementedError):
            _FUSED_ADAM_OK[key] = False
    return _FUSED_ADAM_OK[key]


_FUSED_ADAM_OK: dict = {}


def make_optimizer(params, settings: dict):
    """The protocol's optimizer (Adam or SGD, coupled weight decay), a fused kernel where it exists.

    Adam: :class:`FusedAdam` (one fused-kernel call per step); torch's fused Adam costs about a
    tenth of the default one at m = 4096, and the direct call saves ``Optimizer.step``'s
    bookkeeping on top. Where the kernel is missing, torch's own Adam.
    """
    params = list(params)
    if settings["optimizer"] == "adam" and params and _fused_adam_works(params[0].device):
        return FusedAdam(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    cls = torch.optim.Adam if settings["optimizer"] == "adam" else torch.optim.SGD
    try:
        return cls(params, lr=settings["lr"], weight_decay=settings["weight_decay"], fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / dtype / torch
        return cls(params, lr=settings["lr"], weight_decay=settings["weight_decay"])


def _loss_and_grad(net, zb: torch.Tensor, yb: torch.Tensor, loss: str, num_classes: int) -> torch.Tensor:
    """Per-sample losses of one batch, with ``net.W.grad`` set to the gradient of their mean; no graph.

    The same aten kernels, operand layouts and order that autograd runs for ``net(zb)``, the
    loss of :func:`make_loss_fn` and ``.mean().backward()``, so the losses and the gradient are
    bitwise autograd's (tested); without the graph a step costs 100-200 µs less on one CPU
    thread (about 30% of a step at m = 16, 12% at m = 128 in float64).
    """
    W, a = net.W, net.a
    root = math.sqrt(net.width)
    with torch.no_grad():
        h = zb @ W.T
        r = torch.relu(h)
        out = (r @ a) / root
        B = zb.shape[0]
        g = torch.ones((), dtype=out.dtype, device=out.device).expand(B) / B  # d mean / d losses
        if loss == "ce":
            logsm = torch.log_softmax(out, 1)
            losses, total_weight = torch.ops.aten.nll_loss_forward(logsm, yb, None, 0, -100)
            g = torch.ops.aten.nll_loss_backward(g, logsm, yb, None, 0, -100, total_weight)
            g = torch.ops.aten._log_softmax_backward_data(g, logsm, 1, out.dtype)
        else:
            diff = out - targets_for(loss, yb, num_classes, dtype=out.dtype)
            losses = (diff**2).mean(dim=1)
            g = g.unsqueeze(1).expand(B, diff.shape[1]) / diff.shape[1]
            g = g * (2 * diff.pow(1))
        g = torch.ops.aten.threshold_backward(torch.mm(g / root, a.t()), r, 0)
        W.grad = torch.mm(g.t(), zb)
    return losses


def train_model(model: FeatureModel | str, x_train_unit, y_train, num_classes: int, cfg: TrainConfig, *,
                state: State | None = None, batch_transform=None, width: int = 1024) -> TrainedModel:
    """Train ``model`` (a registered model or its name) on unit rows: the trained net, W at init, the loss history.

    ``state=None`` -> ``model.fit(x_train_unit)`` (the clean training set's state, e.g. C;
    transformed batches are embedded with this same state). ``batch_transform(model, x_batch_unit,
    y_batch) -> x_batch_unit'`` is called each step with the TrainedModel under training (its
    ``net`` is the current network); gradients it leaves on W are discarded.
    ``width`` is the hidden width m (keyword, default 1024).
    """
    if isinstance(model, str):
        model = get_model(model)
    dev = cfg.device if cfg.device != "auto" else resolve_device("auto")
    dtype = getattr(torch, cfg.dtype)
    settings = cfg.resolved()
    loss_name = resolve_loss(cfg.loss, num_classes)
    x = torch.as_tensor(x_train_unit).to(device=dev, dtype=dtype)
    y = torch.as_tensor(y_train).to(device=dev).long()
    require(x.ndim == 2 and x.shape[0] == y.shape[0], f"x {tuple(x.shape)} and y {tuple(y.shape)} do not match")
    require(x.shape[0] >= 1, "empty training set")
    require(int(y.min()) >= 0 and int(y.max()) < num_classes, f"labels must lie in 0..{num_classes - 1}")
    names = param_names(model)
    state = model.fit(x) if state is None else {k: v.detach().to(device=dev, dtype=dtype) for k, v in state.items()
                                                 if k not in names and k != OUTPUT_WEIGHTS}
    params: dict = {}
    if names:  # a fresh draw at this seed, whatever state was passed in
        params = {k: v.to(device=dev, dtype=dtype).requires_grad_(True)
                  for k, v in model.init_params(x.shape[1], int(cfg.seed)).items()}
        state = {**state, **params}
    with torch.no_grad():
        feature_dim = model.features(x[:1], state).shape[1] if names else x.shape[1]
    net = TwoLayerReLU(feature_dim, int(width), num_outputs_for(loss_name, num_classes), init=settings["init"],
                       init_std=settings["init_std"], seed=int(cfg.seed), dtype=dtype, device=dev)
    trained = TrainedModel(model=model, net=net, W0=net.W.detach().clone(), state=state, config=cfg, history=[],
                           num_classes=int(num_classes), loss=loss_name, params=params,
                           params0={k: v.detach().clone() for k, v in params.items()})
    loss_fn = trained.loss_fn()
    # features move with the parameters, so only a parameter-free model can embed once
    feats = trained.features(x) if batch_transform is None and not params else None
    n = x.shape[0]
    bs = n if settings["batch_size"] is None else min(int(settings["batch_size"]), n)
    trainable = [net.W, *params.values()]
    opt = make_optimizer(trainable, settings)
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
    rows = feats if feats is not None else x
    rows_e, y_e = (torch.empty_like(rows), torch.empty_like(y)) if bs < n else (rows, y)
    for _epoch in range(int(settings["epochs"])):
        # one gather per epoch into reused buffers; each batch is then a contiguous slice (the rows rows[order[batch]])
        if bs < n:
            order = torch.randperm(n, generator=gen).to(dev)
            torch.index_select(rows, 0, order, out=rows_e)
            torch.index_select(y, 0, order, out=y_e)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for start in range(0, n, bs):
            yb = y_e[start : start + bs]
            if batch_transform is None:
                zb = rows_e[start : start + bs] if feats is not None else trained.features(rows_e[start : start + bs])
            else:
                xb = batch_transform(trained, rows_e[start : start + bs], yb)
                zb = trained.features(xb.detach())
            if params:  # trained feature parameters: the gradient flows through the features
                losses = loss_fn(net(zb), yb)
                opt.zero_grad(set_to_none=True)
                losses.mean().backward()
                losses = losses.detach()
            else:  # only W moves: its gradient needs no graph (and replaces any the transform left)
                losses = _loss_and_grad(net, zb, yb.long(), loss_name, num_classes)
            opt.step()
            total += losses.sum().to(torch.float64)
        trained.history.append(float(total) / n)
    return trained
