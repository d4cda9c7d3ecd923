"""Seconds per audit cell, by kind, from timings measured on the reference machine with one thread.

Per kind, seconds = coefficients · features(cell) (non-negative least squares on timed cells):

* ``theory``:       [1]
* ``widths``:       [1, Σ_n n³ · views]  (eigen-decompositions of n x n Gram matrices)
* ``k-layer``:      [1, M · P · n³, M · P · n², P · n² · d, M · D · n² · d] with P = data sets x codes x ks
  Grams, D = data sets and M = 1 where the mpmath recursion measures them (n <= measure_max_n), else 0;
  P · n² · d is every cell's float64 features and their condition numbers (most of an unmeasured cell),
  M · D · n² · d the exact mpmath Gram of the rows
* ``ntk-distance``: [1, steps, n · epochs · m · d (training), (n + n_test)² · (m + d) (three kernels,
  the regression), L · steps, P · (n + n_test) · d²] with L the per-step work of trainable feature parameters
  (:func:`_projection_work`, 0 for parameter-free features), P = 1 for a model with such parameters (their
  kernel needs each row's gradient through the d x d attention matrix), steps = optimizer steps (epochs x
  batches per epoch; the lazy protocol's full batch: one per epoch): each step's fixed cost dominates at small widths
* ``flip-rate``:    [1, T · steps, T · n · epochs · m · d, adv · T · steps, adv · T · n · epochs · m · d,
  T · n² · (m + d), att · T · n · d², att · adv · T · n · epochs · d², T · L · steps, P · T · (n + n_test) · d²]
  with ``T`` = 2 trainings, or 3 with the null floor; ``adv`` = the PGD steps per batch under adversarial
  training, else 0; ``att`` = 1 for a transductive model (its features cost a d x d product per row, in every
  attack step).

:func:`malleability.reports.audit.calibrate.calibrate` times scaled-down cells of every kind and
refits the constants below; :func:`estimate_seconds` spreads predicted cells over workers, costliest first.

The coefficients are float32 seconds; a cell trained in another precision costs
``PRECISION_FACTOR[dtype]`` times its prediction (measured on 500-epoch flip cells).

A cell that trains on CUDA is priced by :data:`CUDA_COEFFICIENTS` instead, the same features fitted
(:func:`malleability.reports.audit.calibrate.fit_device`) to cells measured on a GPU; kinds that do
not train (theory, widths, k-layer) run on the CPU there too and keep the CPU's coefficients.
"""

from __future__ import annotations

import functools
import math
import zipfile

import numpy as np

from malleability.theory.claims import EXPECTED_SECONDS

# ntk-distance and flip-rate: fitted (calibrate.fit) on 2026-12-04, AMD EPYC (2 cores), torch 2.14 CPU, one
# thread, on the 452 cells of a fresh quick audit (20 epochs, float32; 7.0 min measured, the 2026-12-02 fit
# had estimated 9.4) and 11 cells of the default plan timed the same day (500 epochs: Table 2 on MNIST and
# CIFAR-10, adversarial training, qkv-attn, the lazy protocol, width 1024), seconds divided by that day's speed
# factor (0.86). The earlier fit predated training's hand-written gradient and over-predicted these cells
# 1.2-2.0x. In the fit, the default cells' seconds are predicted to 1.03 (flip-rate) and 1.39 (ntk-distance)
# in sum; a fit on the quick cells alone over-predicts them 1.4-1.6x, so 500-epoch cells need their own.
# theory, widths, k-layer: from calibration cells and timed cells of their own. k-layer: 22 cells (MNIST and
# CIFAR-10, n = 8-300, measured and Gram-polynomial) timed on 2026-12-03 on this EPYC (speed factor 1.19,
# divided out); the fit is within 20% on 17 of them, the cheapest CIFAR-10 cells (< 0.2 s) excepted.
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "theory": (0.2113,),
    # the intercept is a timed widths cell in a fresh process (14.5 s, 2026-12-01: loading the data set dominates)
    "widths": (14.5, 1.443e-09),
    # the last coefficient: trainable projections (qkv-attn), its d^1.5 from MNIST vs CIFAR-10 500-epoch cells
    "ntk-distance": (0.005665, 0.0, 7.67e-11, 3.793e-10, 6.345e-12, 1.58e-09),
    "k-layer": (0.007117, 5.598e-06, 3.657e-05, 2.629e-10, 2.689e-06),
    "flip-rate": (0.01287, 2.13e-05, 5.568e-11, 0.000102, 1.741e-10, 5.882e-10, 1e-10, 7.252e-11, 6.488e-12, 1.863e-09),
}

# The CPU coefficients a device fit scales its unmeasured columns from (calibrate.fit_device): the fit of
# 2026-12-02, whose cells separated a training step's fixed cost from its arithmetic (0.57 ms a step). The
# 2026-12-04 refit above puts an ntk-distance step's cost on its arithmetic (step coefficient 0), so it
# gives no step ratio; the GPU's CUDA_COEFFICIENTS were fitted against these.
DEVICE_FIT_BASE: dict[str, tuple[float, ...]] = {
    "ntk-distance": (0.0, 0.0005691, 7.987e-11, 7.301e-10, 1.969e-11, 1.608e-09),
    "flip-rate": (0.007488, 0.0004343, 7.751e-11, 0.0009833, 2.341e-10, 9.167e-10, 1.666e-10, 8.619e-11, 8.725e-12, 2.204e-09),
}


# Seconds per theory claim and profile: the theory package's own table (theory.claims.EXPECTED_SECONDS)
THEORY_SECONDS_BY_PROFILE = EXPECTED_SECONDS
THEORY_SECONDS = THEORY_SECONDS_BY_PROFILE["quick"]  # the audit's profile at quick and default


def _row_length(dataset: str) -> int:
    """Pixels per image: the built-in sets' sizes, a user's .npz from its header (like MNIST if unreadable)."""
    if dataset.endswith(".npz"):
        return _npz_row_length(dataset) or 784
    return 3072 if dataset == "cifar10" else 784


@functools.lru_cache(maxsize=64)
def _npz_row_length(path: str) -> int | None:
    """The product of x's trailing dimensions, from the .npy header of the archive's ``x`` member alone
    (no data decompressed, nothing unpickled); None where the file cannot be read so: loading it will say why."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i for i in zf.infolist()}
            info = members.get("x.npy") or members.get("x")
            if info is None:
                return None
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    return None
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape = reader(fh)[0]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    row = math.prod(int(k) for k in shape[1:])
    return row if len(shape) >= 2 and row >= 1 else None


def _dim(cfg) -> int:
    return _row_length(cfg.data.dataset)


def _transductive(model: str) -> bool:
    from malleability.empirics.models import MODELS

    return bool(getattr(MODELS.get(model), "transductive", False))


def features(cell) -> list[float]:
    """The cost features of one cell (see the module docstring)."""
    cfg = cell.config
    if cell.kind == "theory":
        return [1.0]
    if cell.kind == "widths":
        ns = cfg.ns or (cfg.data.n,)
        return [1.0, float(sum(int(n) ** 3 for n in ns) * max(1, len(cfg.models)))]
    if cell.kind == "k-layer":
        # mpmath products and eigensolves where measured (about n^2.3 between n = 20 and 50), else the polynomial
        grams = float(len(cfg.codes) * len(cfg.ks) * len(cfg.datasets))
        n = int(max(cfg.n))
        measured = 1.0 if n <= int(cfg.measure_max_n) else 0.0
        d = sum(_row_length(ds) for ds in cfg.datasets) / len(cfg.datasets)
        sets = float(len(cfg.datasets))
        return [1.0, measured * grams * n ** 3, measured * grams * n ** 2, grams * n ** 2 * d,
                measured * sets * n ** 2 * d]
    if cell.kind not in ("ntk-distance", "flip-rate"):
        return [1.0]
    epochs = cfg.train.resolved()["epochs"]
    n, m, d = int(cfg.data.n), int(cfg.width), _dim(cfg)
    steps = float(optimizer_steps(cfg.train, n))
    work = _projection_work(cfg, n, d)
    learned = work * steps
    nt = n + int(cfg.data.n_test)
    kernel_rows = float(nt * d * d) if work else 0.0
    if cell.kind == "ntk-distance":
        return [1.0, steps, float(n * epochs * m * d), float(nt * nt * (m + d)), learned, kernel_rows]
    trainings = 2 + (1 if cfg.null_eps is not None else 0)
    adv = float(cfg.adv_train_steps) if cfg.adv_train else 0.0
    train = float(n * epochs * m * d)
    att = 1.0 if _transductive(cfg.model) else 0.0
    return [1.0, trainings * steps, trainings * train, adv * trainings * steps, adv * trainings * train,
            float(trainings * n * n * (m + d)), att * trainings * n * d * d, att * adv * trainings * n * epochs * d * d,
            trainings * learned, trainings * kernel_rows]


def _projection_work(cfg, n: int, d: int) -> float:
    """Per optimizer step, the work of trainable feature parameters (qkv-attn's d x d_k projections of
    every training row, and their part of the NTK): n · d^1.5 · d_k, the power of d measured (MNIST vs
    CIFAR-10 cells); 0 for parameter-free features."""
    from malleability.empirics.models import get_model

    model = get_model(cfg.model, cfg.model_options)
    if not model.param_names:
        return 0.0
    return float(n) * float(d) ** 1.5 * float(getattr(model, "d_k", d))


def optimizer_steps(train, n: int) -> int:
    """Optimizer steps of one training: epochs x batches per epoch (full batch: one per epoch)."""
    settings = train.resolved()
    batch = settings["batch_size"]
    return int(settings["epochs"]) * (1 if batch is None else -(-int(n) // int(batch)))


# A float64 cell's seconds over the same float32 cell's, timed back to back on one thread (2026-12-02, AMD EPYC,
# 500 epochs, PGD flip cells of the default scale): MNIST MLP-Attn 1.78, MNIST QKV-Attn 1.88, CIFAR-10 2L-ReLU
# 1.98, CIFAR-10 MLP-Attn 1.72 (1.85 over their summed seconds); at 50 epochs MNIST MLP-Attn under adversarial
# training 1.91. MNIST 2L-ReLU gave 1.43, its float32 run slowed by the process's first-call costs.
PRECISION_FACTOR = {"float32": 1.0, "float64": 1.85}


def precision_factor(cell) -> float:
    """How much a cell's training precision multiplies its float32 prediction (1 for untrained kinds)."""
    train = getattr(cell.config, "train", None)
    return PRECISION_FACTOR.get(getattr(train, "dtype", "float32"), 1.0) if train is not None else 1.0


# What a cell costs inside an audit beyond its own computation (result transfer, provenance, the
# executor's bookkeeping): in the quick audit of 2026-12-04 (466 cells, 2 workers) the wall time exceeded
# half the cells' summed seconds by 0.03 s a cell (the earlier 0.3 s was
# measured on 2026-12-01).
AUDIT_OVERHEAD_S = {"ntk-distance": 0.03, "flip-rate": 0.03}


# ntk-distance and flip-rate cells trained on a CUDA device: fitted (calibrate.fit_device) on 2026-12-04 on
# the 188 cells of reports/gpu-h200 (MNIST, n = 1000, 500 epochs, widths 4..4096, float32; 176 ntk-distance
# cells under both protocols, 12 flip cells at width 1024). A training step there costs 0.56x the CPU's
# (launch-bound at every width measured) and a unit of arithmetic 0.001x; columns no measured cell exercised
# (trainable projections, adversarial training, transductive attention) are the CPU's scaled by those ratios.
# Their predictions sum to 0.90 of the measured seconds of both kinds (per cell: 10th-90th percentile
# 0.68-1.28), and the cells of the two leases differed by up to 1.4x at the same settings.
CUDA_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "ntk-distance": (0.207, 0.0003198, 8.12e-14, 0.0, 2.002e-14, 1.635e-12),
    "flip-rate": (1.042, 0.0003198, 8.12e-14, 0.0005526, 2.38e-13, 0.0, 1.694e-13, 8.762e-14, 8.87e-15, 2.241e-12),
}
CUDA_MEASURED_ON = "an NVIDIA H200 (torch 2.11, CUDA 13.0, float32 training; 2026-12-04)"


def on_cuda(cell) -> bool:
    """Whether the cell trains on a CUDA device (its config's ``train.device``)."""
    train = getattr(getattr(cell, "config", None), "train", None)
    return str(getattr(train, "device", "cpu")).startswith("cuda")


def cell_seconds(cell, coefficients: dict | None = None) -> float:
    """Predicted seconds of one cell inside an audit: on one CPU thread, or on the GPU for a cell that trains
    on CUDA (:data:`CUDA_COEFFICIENTS`; there the slice's per-cell times equal the cells' own, no overhead)."""
    if cell.kind == "theory" and coefficients is None:
        table = THEORY_SECONDS_BY_PROFILE.get(getattr(cell.config, "profile", "quick"), THEORY_SECONDS)
        if cell.config.claim in table:
            return table[cell.config.claim]
    cuda = coefficients is None and cell.kind in CUDA_COEFFICIENTS and on_cuda(cell)
    coef = (CUDA_COEFFICIENTS if cuda else coefficients or COEFFICIENTS).get(cell.kind, (5.0,))
    overhead = AUDIT_OVERHEAD_S.get(cell.kind, 0.0) if coefficients is None and not cuda else 0.0
    return overhead + precision_factor(cell) * float(sum(c * f for c, f in zip(coef, features(cell))))


# pace_probe.probe_seconds (one thread) of the host the coefficients price, per training of the probe:
# measured on an AMD EPYC with AVX-512 on 2026-12-07 just before and after a default audit (0.1865,
# 0.2922, 0.0811 s, means of the two), divided by that audit's pace against the model (1.042: 77.7 min
# of wall time against 74.6 unscaled). A calibration on one host and day, not yet checked on others.
REFERENCE_PROBE_SECONDS = {"adversarial": 0.1790, "cifar": 0.2804, "mnist": 0.0778}
SPEED_FACTOR_RANGE = (0.25, 4.0)
# What the speed factor measures; results.json records it (results without the key used "gemm").
SPEED_MEASURE = "pace-probe"


def machine_speed_factor(*, repeats: int = 3) -> float:
    """How many times longer a cell takes on this CPU than on the model's host, measured once per process.

    The mean, over the pace probe's three trainings (:mod:`~malleability.reports.audit.pace_probe`,
    each standing for about a third of the default plan's flip-rate time), of its seconds here over
    :data:`REFERENCE_PROBE_SECONDS`, clamped to :data:`SPEED_FACTOR_RANGE`. It replaced the ratio of
    one-thread float32 GEMM rates, which read an Intel Xeon 0.64 (1.55x the model host's GEMM rate)
    where the default audit then ran at 1.08x the unscaled model and took 80.8 min against an estimate
    of 48.1 (2026-12-05), and an AVX2-only EPYC 1.29 where it ran at 1.45 (106.6 min against 94.8).
    """
    key = int(repeats)
    if key not in _SPEED:
        from malleability.reports.audit.pace_probe import probe_seconds

        seconds = probe_seconds(repeats=key)
        ratio = sum(seconds[k] / REFERENCE_PROBE_SECONDS[k] for k in REFERENCE_PROBE_SECONDS) / len(REFERENCE_PROBE_SECONDS)
        lo, hi = SPEED_FACTOR_RANGE
        _SPEED[key] = min(hi, max(lo, ratio))
    return _SPEED[key]


_SPEED: dict = {}


def estimate_seconds(cells, workers: int, coefficients: dict | None = None) -> float:
    """Wall-time estimate: the cells' predicted seconds spread greedily over the workers, costliest first."""
    loads = [0.0] * max(1, int(workers))
    for s in sorted((cell_seconds(c, coefficients) for c in cells), reverse=True):
        i = loads.index(min(loads))
        loads[i] += s
    return max(loads) if cells else 0.0


# the k-layer cells the coefficients were fitted on stack at most this many layers (the audit's ks)
K_LAYER_FITTED_MAX_K = 4


def outside_fit(cells) -> list[str]:
    """Why the estimate of these cells may be low: cells beyond the range the coefficients were fitted on.

    A measured k-layer cell deeper than :data:`K_LAYER_FITTED_MAX_K` needs mpmath digits that grow
    with the exponent (up to ``MAX_MEASURE_DIGITS``), which the features do not count."""
    deep = [int(max(c.config.ks)) for c in cells if c.kind == "k-layer"
            and int(max(c.config.n)) <= int(c.config.measure_max_n) and int(max(c.config.ks)) > K_LAYER_FITTED_MAX_K]
    if not deep:
        return []
    from malleability.empirics.experiments.k_layer import MAX_MEASURE_DIGITS

    return [f"the cost model's k-layer cells stack k <= {K_LAYER_FITTED_MAX_K} layers; measured to k = {max(deep)}, a "
            f"Gram needs up to {MAX_MEASURE_DIGITS} mpmath digits, so this estimate can be several times low"]
