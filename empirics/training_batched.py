"""Several seeds of :func:`~malleability.empirics.training.train_model` in one program.

``train_models_batched`` trains one network per config with a leading seed axis: the
weights of all seeds are one ``(S, m, d)`` parameter, the forward and backward products are
batched (``torch.bmm``), and one optimizer steps the stacked parameter. Adam, SGD and the
coupled weight decay are elementwise, so one optimizer over the stack keeps exactly the
per-seed state (moments, step count) that S separate optimizers would keep. Each seed keeps
its own init (``TwoLayerReLU(seed=s)``) and its own batch order (a CPU generator seeded with
``s + 1``, drawn exactly as ``train_model`` draws it), so seed ``s`` of the batch reproduces
``train_model`` with seed ``s`` up to floating-point rounding.

The optimizer is torch's fused kernel where available: on one CPU thread the default
(foreach) Adam step at m = 4096, d = 784 costs more than the step's matrix products
(about 36 ms against 3 ms fused), so it is the largest term of a plain training step.

Batching pays only where per-operation overhead dominates (small widths); at large widths
the stacked moments no longer fit in cache and one seed at a time is as fast or faster.
:func:`should_batch` encodes the crossover measured by ``malleability bench training``.
"""

from __future__ import annotations

import math
import time

import torch

from malleability.empirics.models import FeatureModel, State, get_model
from malleability.empirics.network import TwoLayerReLU
from malleability.empirics.training import (TrainConfig, TrainedModel, make_optimizer, num_outputs_for, resolve_device,
                                            resolve_loss, targets_for)
from malleability.empirics.timing import median_time
from malleability.errors import require

# Largest width at which one batched program over the seeds beat the per-seed loop
# (bench training, one thread, n = 600, batch 128, d = 784, 5 seeds).
BATCH_MAX_WIDTH = 64

# Settings that must agree across the configs of one batch (everything but the seed).
_SHARED = ("protocol", "epochs", "lr", "batch_size", "weight_decay", "init", "init_std", "optimizer", "loss", "device",
           "dtype")


def should_batch(width: int, n_seeds: int, *, max_width: int = BATCH_MAX_WIDTH) -> bool:
    """Whether one batched program over ``n_seeds`` seeds beats a per-seed loop at this width."""
    return int(n_seeds) >= 2 and int(width) <= int(max_width)


def _check_batch(cfgs: list[TrainConfig]) -> dict:
    require(len(cfgs) >= 1, "train_models_batched needs at least one TrainConfig")
    first = cfgs[0].resolved()
    for cfg in cfgs[1:]:
        other = cfg.resolved()
        diff = [k for k in _SHARED if other[k] != first[k]]
        require(not diff, f"configs of one batch may differ only in the seed; they differ in {', '.join(diff)}")
    seeds = [int(c.seed) for c in cfgs]
    require(len(set(seeds)) == len(seeds), f"repeated seed in the batch: {seeds}")
    return first


def train_models_batched(model: FeatureModel | str, x_train_unit, y_train, num_classes: int,
                         cfgs: list[TrainConfig], *, width: int = 1024, state: State | None = None) -> list[TrainedModel]:
    """Train one network per config (configs differ only in the seed) with a leading seed axis.

    Same inputs and result as ``[train_model(model, x, y, K, c, width=width, state=state) for c in cfgs]``
    (no ``batch_transform``: adversarial training attacks each network separately).
    """
    if isinstance(model, str):
        model = get_model(model)
    settings = _check_batch(list(cfgs))
    cfg0 = cfgs[0]
    dev = resolve_device(cfg0.device) if cfg0.device == "auto" else cfg0.device
    dtype = getattr(torch, cfg0.dtype)
    loss_name = resolve_loss(cfg0.loss, num_classes)
    x = torch.as_tensor(x_train_unit).to(device=dev, dtype=dtype)
    y = torch.as_tensor(y_train).to(device=dev).long()
    require(x.ndim == 2 and x.shape[0] == y.shape[0], f"x {tuple(x.shape)} and y {tuple(y.shape)} do not match")
    require(x.shape[0] >= 1, "empty training set")
    require(int(y.min()) >= 0 and int(y.max()) < num_classes, f"labels must lie in 0..{num_classes - 1}")
    require(int(width) >= 1, f"width must be >= 1, got {width}")
    state = model.fit(x) if state is None else {k: v.to(device=dev, dtype=dtype) for k, v in state.items()}
    K = num_outputs_for(loss_name, num_classes)
    nets = [TwoLayerReLU(x.shape[1], int(width), K, init=settings["init"], init_std=settings["init_std"],
                         seed=int(c.seed), dtype=dtype, device=dev) for c in cfgs]
    trained = [TrainedModel(model=model, net=net, W0=net.W.detach().clone(), state=state, config=c, history=[],
                            num_classes=int(num_classes), loss=loss_name) for net, c in zip(nets, cfgs)]
    W = torch.nn.Parameter(torch.stack([net.W.detach() for net in nets]))  # (S, m, d)
    a = torch.stack([net.a for net in nets]) / math.sqrt(int(width))  # (S, m, K), the 1/sqrt(m) folded in
    histories = _fit(W, a, trained[0].features(x), y, loss_name, settings,
                     [int(c.seed) for c in cfgs])
    for s, tm in enumerate(trained):
        with torch.no_grad():
            tm.net.W.copy_(W[s])
        tm.history.extend(histories[s])
    return trained


def _fit(W: torch.nn.Parameter, a: torch.Tensor, feats: torch.Tensor, y: torch.Tensor, loss_name: str,
         settings: dict, seeds: list[int]) -> list[list[float]]:
    """The training loop on the stacked parameter; per-seed loss histories (mean per-sample loss per epoch).

    Gradients are written by hand rather than by autograd: at small widths autograd's graph
    is most of the step, and at large widths its backward through the transposed batched
    product copies W every step. Each batch's rows and targets (one-hot for CE, ±1 for the
    squared losses) are gathered into reused buffers just before its products (a whole epoch's
    gather does not stay in cache), the loss's constant factors are folded into a copy of the
    output weights, and the gradient is written into one buffer: at small widths a step is
    about twenty kernel calls. With one seed every product is a plain 2-D one. The hand-written
    gradient is tested against ``train_model``.
    """
    S, n = W.shape[0], feats.shape[0]
    bs = n if settings["batch_size"] is None else min(int(settings["batch_size"]), n)
    opt = make_optimizer([W], settings)
    gens = [torch.Generator().manual_seed(s + 1) for s in seeds]
    histories: list[list[float]] = [[] for _ in range(S)]
    one = S == 1  # drop the seed axis: 2-D products and views
    Wd = W.detach()[0] if one else W.detach()
    a_s = a[0] if one else a
    K = a.shape[2]
    ce = loss_name == "ce"
    # d(batch mean of the per-sample loss)/d out = scale · (softmax - onehot) for CE, scale · (out - t) otherwise
    scale = {B: (1.0 if ce else 2.0 / K) / B for B in {bs, n - (n // bs) * bs or bs}}
    aT = {B: (a_s * c).transpose(-1, -2).contiguous() for B, c in scale.items()}
    mm = torch.mm if one else torch.bmm
    grad = torch.empty_like(W.detach())
    W.grad = grad
    grad_out = grad[0] if one else grad

    def targets(labels):  # (..., B) labels -> (..., B, K) targets in the training dtype
        if ce:
            return torch.nn.functional.one_hot(labels, K).to(feats.dtype)
        return targets_for(loss_name, labels.reshape(-1), K if loss_name != "mse" else 2,
                           dtype=feats.dtype).reshape(*labels.shape, K)

    T_all = targets(y)  # (n, K)
    if bs < n:  # each batch is gathered just before its products, while the rows are still in cache
        zbuf = torch.empty(S * bs, feats.shape[1], dtype=feats.dtype, device=feats.device)
        tbuf = torch.empty(S * bs, K, dtype=feats.dtype, device=feats.device)
    totals = torch.zeros(S, dtype=torch.float64, device=feats.device)
    for _epoch in range(int(settings["epochs"])):
        if bs < n:
            orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(feats.device)
        totals.zero_()
        for start in range(0, n, bs):
            if bs >= n:  # full batch: every seed sees the same rows in the same order
                zb, Tb = (feats, T_all) if one else (feats.expand(S, n, feats.shape[1]), T_all)
                if one:
                    h = zb @ Wd.T
                else:  # one product serves all seeds
                    h = (feats @ Wd.reshape(-1, Wd.shape[2]).T).reshape(n, S, -1).transpose(0, 1)
            else:
                idx = orders[:, start:start + bs].reshape(-1)
                rows = idx.shape[0]
                torch.index_select(feats, 0, idx, out=zbuf[:rows])
                torch.index_select(T_all, 0, idx, out=tbuf[:rows])
                zb, Tb = (zbuf[:rows], tbuf[:rows]) if one else (zbuf[:rows].view(S, -1, feats.shape[1]),
                                                                 tbuf[:rows].view(S, -1, K))
                h = mm(zb, Wd.transpose(-1, -2))
            B = zb.shape[-2]
            out = mm(torch.relu(h), a_s)
            if ce:  # by hand: torch's log_softmax over 10 classes costs several times these five kernels
                z = out.sub_(out.amax(dim=-1, keepdim=True))
                e = z.exp()
                se = e.sum(dim=-1, keepdim=True)
                # per-sample CE = log Σ_k e^{z_k} - Σ_k t_k z_k
                totals.add_(se.log().sum(dim=(-2, -1)) - torch.mul(z, Tb).sum(dim=(-2, -1)))
                r = e.div_(se).sub_(Tb)
            else:
                r = out.sub_(Tb)
                totals.add_(torch.mul(r, r).sum(dim=(-2, -1)), alpha=1.0 / K)  # per-sample mean over K
            delta = torch.ops.aten.threshold_backward(mm(r, aT[B]), h, 0)  # relu' = [h > 0]
            mm(delta.transpose(-1, -2), zb, out=grad_out)
            opt.step()
        for s, total in enumerate(totals.tolist()):
            histories[s].append(total / n)
    return histories


def train_models(model: FeatureModel | str, x_train_unit, y_train, num_classes: int, cfgs: list[TrainConfig], *,
                 width: int = 1024, state: State | None = None, max_batch_width: int = BATCH_MAX_WIDTH) -> list[TrainedModel]:
    """Train every config: one batched program where :func:`should_batch` says it pays, else one seed at a time."""
    cfgs = list(cfgs)
    if should_batch(width, len(cfgs), max_width=max_batch_width):
        return train_models_batched(model, x_train_unit, y_train, num_classes, cfgs, width=width, state=state)
    return [train_models_batched(model, x_train_unit, y_train, num_classes, [c], width=width, state=state)[0]
            for c in cfgs]


# --------------------------------------------------------------------------------------------
# benchmark


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def _step_products(B: int, d: int, m: int, K: int, dtype=torch.float32, *, seed: int = 0):
    """(callable, flops): the four matrix products of one training step at its own shapes."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(B, d, generator=gen).to(dtype)
    W = torch.randn(m, d, generator=gen).to(dtype)
    a = torch.randn(m, K, generator=gen).to(dtype)
    g = torch.randn(B, K, generator=gen).to(dtype)

    def products():
        h = z @ W.T
        h @ a
        delta = g @ a.T
        delta.T @ z

    products()
    return products, 2.0 * B * m * (2 * d + 2 * K)


def step_floor(B: int, d: int, m: int, K: int, dtype=torch.float32, *, repeats: int = 7, seed: int = 0) -> dict:
    """The matrix products of one training step timed alone at its own shapes (median of ``repeats``).

    Forward ``h = z Wᵀ`` (B, m) and ``out = relu(h) a`` (B, K); backward ``δ = (∂out) aᵀ`` (B, m)
    and ``dW = δᵀ z`` (m, d): ``flops = 2 B m (2d + 2K)``. ``gemm_gflops`` = flops / the time.
    """
    products, flops = _step_products(B, d, m, K, dtype, seed=seed)
    t = median_time(products, repeats)
    return {"floor_s": t, "flops": flops, "gemm_gflops": flops / t / 1e9}


def square_gemm_gflops(dtype=torch.float32, size: int = 1024, repeats: int = 7) -> float:
    A = torch.randn(size, size, dtype=dtype)
    A @ A
    return 2.0 * size**3 / median_time(lambda: A @ A, repeats) / 1e9


def benchmark_training(widths=(16, 256, 4096), *, n: int = 600, d: int = 784, num_classes: int = 10,
                       batch_size: int = 128, seeds: int = 5, epochs: int = 10, repeats: int = 3,
                       dtype: str = "float32", seed: int = 0) -> dict:
    """Per-step training time against the step's matmul floor, and batched over seeds against a per-seed loop.

    Paper protocol (Adam, coupled weight decay), the 2L-ReLU model (identity features) on
    random unit rows, CE over ``num_classes`` outputs, in this process with its thread count.
    Each training is timed at ``epochs`` and at 0 epochs (setup: init, fit) and the difference
    is divided by the seed-steps, so setup is not counted. ``repeats`` rounds each time every
    path and the floor back to back; times are medians over rounds, and ``ratio_to_floor`` and
    ``speedup_batched`` are medians of the per-round ratios (listed in ``*_rounds``).
    Per width: ``step_s`` (the plain path: fused optimizer, one seed at a time),
    ``reference_step_s`` (``train_model``), ``batched_step_s`` (one program over the seeds, per
    seed-step), ``floor_s`` (the four products of :func:`step_floor` at the mean batch size, run
    once per timed seed-step), ``ratio_to_floor`` = step / floor, ``reference_ratio_to_floor``,
    ``speedup_batched`` = step / batched step and ``speedup_batched_vs_reference``.
    """
    from malleability.empirics.training import train_model

    for name, value in (("n", n), ("d", d), ("batch_size", batch_size), ("seeds", seeds), ("epochs", epochs),
                        ("repeats", repeats)):
        require(int(value) >= 1, f"{name} must be >= 1, got {value}")
    require(int(num_classes) >= 2, f"num_classes must be >= 2, got {num_classes}")
    require(widths and all(int(m) >= 1 for m in widths), "widths must be >= 1")
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand(int(n), int(d), generator=gen, dtype=torch.float64)
    x = (x / x.norm(dim=1, keepdim=True)).to(dt)
    y = torch.randint(0, int(num_classes), (int(n),), generator=gen)
    steps = math.ceil(int(n) / min(int(batch_size), int(n)))
    seed_steps = int(epochs) * steps * int(seeds)

    def cfgs(ep):
        return [TrainConfig(protocol="paper", epochs=ep, seed=s, dtype=dtype, batch_size=int(batch_size))
                for s in range(int(seeds))]

    def run_time(run, ep) -> float:
        t = time.perf_counter()
        run(cfgs(ep))
        return time.perf_counter() - t

    rows = []
    for m in widths:
        m = int(m)

        def loop(cs, m=m):
            for c in cs:
                train_models_batched("relu", x, y, num_classes, [c], width=m)

        def reference(cs, m=m):
            for c in cs:
                train_model("relu", x, y, num_classes, c, width=m)

        def batched(cs, m=m):
            train_models_batched("relu", x, y, num_classes, cs, width=m)

        products, flops = _step_products(round(int(n) / steps), int(d), m, int(num_classes), dt)  # the mean batch

        def floor_time() -> float:  # as many product sets as the timed trainings have seed-steps
            t = time.perf_counter()
            for _ in range(seed_steps):
                products()
            return (time.perf_counter() - t) / seed_steps

        batched(cfgs(1)[:2])  # warm-up: first-call allocations and dispatch are not timed
        # Each round times every path and the floor back to back, so the per-round ratios share the
        # host's state (timings on one shared host moved 30% within minutes); medians over rounds.
        rounds = {"loop": [], "reference": [], "batched": [], "floor": []}
        for _ in range(int(repeats)):
            for name, run in (("loop", loop), ("reference", reference), ("batched", batched)):
                rounds[name].append(max(run_time(run, int(epochs)) - run_time(run, 0), 0.0) / seed_steps)
            rounds["floor"].append(floor_time())
        ratio = [t / f for t, f in zip(rounds["loop"], rounds["floor"])]
        speedup = [t / b for t, b in zip(rounds["loop"], rounds["batched"]) if b > 0]
        t_loop, t_ref, t_batch, t_floor = (_median(rounds[k]) for k in ("loop", "reference", "batched", "floor"))
        rows.append({
            "width": m, "step_s": t_loop, "reference_step_s": t_ref, "batched_step_s": t_batch,
            "floor_s": t_floor, "floor_flops": flops, "gemm_gflops": flops / t_floor / 1e9,
            # 0 when the steps were too short to resolve against the setup time
            "ratio_to_floor": _median(ratio), "ratio_to_floor_rounds": ratio,
            "reference_ratio_to_floor": _median([t / f for t, f in zip(rounds["reference"], rounds["floor"])]),
            "batched_ratio_to_floor": _median([t / f for t, f in zip(rounds["batched"], rounds["floor"])]),
            "speedup_batched": _median(speedup) if speedup else None, "speedup_batched_rounds": speedup,
            "speedup_batched_vs_reference": t_ref / t_batch if t_batch > 0 else None,
            "should_batch": should_batch(m, int(seeds)),
        })
    return {"n": int(n), "d": int(d), "num_classes": int(num_classes), "batch_size": int(batch_size),
            "seeds": int(seeds), "epochs": int(epochs), "repeats": int(repeats), "dtype": dtype,
            "steps_per_epoch": steps, "threads": torch.get_num_threads(),
            "square_gemm_gflops": square_gemm_gflops(dt), "widths": rows,
            "reading": "per seed-step, setup excluded; floor = the step's four matrix products timed alone; "
                       "every path and the floor timed back to back in each of `repeats` rounds, ratios the "
                       "median of the per-round ratios"}
