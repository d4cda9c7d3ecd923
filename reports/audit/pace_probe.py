"""How fast this CPU runs the audit's costliest work: a short, fixed piece of the flip cells' training.

The default plan spends about nine tenths of its predicted time in flip-rate cells, in float64
at width 128, and that time falls in about equal thirds: MLP-Attn under PGD adversarial training
on 784-pixel rows (MNIST), plain training on 3072-pixel rows (CIFAR-10), and plain training on
784-pixel rows. :func:`probe_seconds` times a scaled-down copy of each (random rows, the same code
path: ``train_model``, with the flip cells' adversarial batch transform) on one thread. A square float32 GEMM, the earlier measure,
misjudged hosts whose small float64 products, elementwise passes and dispatch do not keep pace
with their GEMM units (an Intel Xeon read 1.55x faster than the model's EPYC, yet ran the default
audit at the EPYC's pace).
"""

from __future__ import annotations

import statistics
import time

import torch

# The probe's workload; fixed, because its time is compared with the reference host's.
PROBE = {"width": 128, "adv_rows": 128, "adv_epochs": 4, "adv_steps": 3, "cifar_rows": 256, "cifar_epochs": 4,
         "mnist_rows": 256, "mnist_epochs": 20, "batch_size": 128, "seed": 0}


def _rows(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from malleability.empirics.models import unit

    gen = torch.Generator().manual_seed(int(seed))
    pixels = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return pixels, unit(pixels), torch.randint(0, 10, (n,), generator=gen)


def probe_workload() -> dict:
    """The three trainings as ready-to-run callables (data drawn once, outside the timing)."""
    from malleability.empirics.data import DataConfig
    from malleability.empirics.experiments.flip_rate.cell import adversarial_batch_transform
    from malleability.empirics.experiments.flip_rate.config import FlipRateConfig
    from malleability.empirics.models import get_model
    from malleability.empirics.training import TrainConfig, train_model

    p = PROBE
    adv_pixels, adv_unit, adv_y = _rows(p["adv_rows"], 784, p["seed"])
    _, cifar_unit, cifar_y = _rows(p["cifar_rows"], 3072, p["seed"] + 1)
    _, mnist_unit, mnist_y = _rows(p["mnist_rows"], 784, p["seed"] + 2)

    def train_cfg(epochs):
        return TrainConfig(protocol="paper", epochs=int(epochs), seed=p["seed"], dtype="float64",
                           batch_size=p["batch_size"])

    cfg = FlipRateConfig(data=DataConfig(dataset="mnist", n=p["adv_rows"], n_test=1), train=train_cfg(p["adv_epochs"]),
                         model="mlp-attn", adv_train=True, adv_train_steps=p["adv_steps"], width=p["width"])

    def adversarial():
        transform = adversarial_batch_transform(cfg, adv_pixels, adv_unit)
        train_model(get_model("mlp-attn"), adv_unit, adv_y, 10, cfg.train, batch_transform=transform,
                    width=p["width"])

    def plain(x, y, epochs):
        return lambda: train_model(get_model("mlp-attn"), x, y, 10, train_cfg(epochs), width=p["width"])

    return {"adversarial": adversarial, "cifar": plain(cifar_unit, cifar_y, p["cifar_epochs"]),
            "mnist": plain(mnist_unit, mnist_y, p["mnist_epochs"])}


def probe_seconds(repeats: int = 3) -> dict:
    """Seconds of each probe training on one thread (median of ``repeats`` after one warm-up)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = probe_workload()
        out = {}
        for name, run in work.items():
            run()  # first-call allocations and dispatch are not timed
            times = []
            for _ in range(max(1, int(repeats))):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            out[name] = statistics.median(times)
    finally:
        torch.set_num_threads(threads)
    return out
