"""Every number the paper reports, as data, with the table or sentence it comes from.

Source: ``../shared/PAPER.md`` (arXiv 2603.13085 v1/v2, from the abstract and third-party
notes; the full text was not available). Model keys follow the code: ``relu`` is the
paper's 2L-ReLU, ``mlp-attn`` its MLP-Attn. Flip rates are fractions (0.041 = 4.1%).
"""

from __future__ import annotations

SOURCE = "PAPER.md (arXiv 2603.13085 v1, v2 where noted)"

MODEL_LABELS = {"relu": "2L-ReLU", "mlp-attn": "MLP-Attn"}
DATASET_LABELS = {
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "fashion-mnist": "Fashion-MNIST",
    "mnist-3v8": "MNIST 3 vs 8",
    "cifar10-cars-planes": "CIFAR-10 cars vs planes",
}
ATTACKS = ("fgsm", "pgd", "mim")

# Table 1: NTK distance vs width (formula not stated by the paper).
NTK_DISTANCE_TABLE = {
    "source": "Table 1 (NTK distance vs width)",
    "widths": (16, 1024, 4096),
    "values": {
        ("relu", "mnist"): (45.1, 39.9, 39.2),
        ("mlp-attn", "mnist"): (10.3, 33.3, 43.4),
        ("relu", "cifar10"): (246.2, 101.7, 56.9),
        ("mlp-attn", "cifar10"): (3.7, 10.4, 12.6),
    },
}

# Table 2: influence flip rate, 10-class, eps = 0.3.
FLIP_RATE_10CLASS = {
    "source": "Table 2 (flip rate, 10-class, eps = 0.3)",
    "eps": 0.3,
    "values": {
        ("mnist", "relu"): {"fgsm": 0.041, "pgd": 0.033, "mim": 0.034},
        ("mnist", "mlp-attn"): {"fgsm": 0.346, "pgd": 0.289, "mim": 0.219},
        ("cifar10", "relu"): {"fgsm": 0.033, "pgd": 0.031, "mim": 0.032},
        ("cifar10", "mlp-attn"): {"fgsm": 0.264, "pgd": 0.191, "mim": 0.205},
    },
}

# Table 3: binary tasks, eps = 0.3.
FLIP_RATE_BINARY = {
    "source": "Table 3 (flip rate, binary tasks, eps = 0.3)",
    "eps": 0.3,
    "values": {
        ("mnist-3v8", "relu"): {"fgsm": 0.084, "pgd": 0.084, "mim": 0.086},
        ("mnist-3v8", "mlp-attn"): {"fgsm": 0.259, "pgd": 0.410, "mim": 0.405},
        ("cifar10-cars-planes", "relu"): {"fgsm": 0.152, "pgd": 0.155, "mim": 0.153},
        ("cifar10-cars-planes", "mlp-attn"): {"fgsm": 0.143, "pgd": 0.140, "mim": 0.148},
    },
}

# Table 4: adversarial-training ablation, PGD flip rate.
FLIP_RATE_ADV_TRAINING = {
    "source": "Table 4 (PGD flip rate, standard vs adversarial training)",
    "eps": 0.3,
    "values": {
        ("mnist", "relu"): {"standard": 0.033, "adversarial": 0.434},
        ("mnist", "mlp-attn"): {"standard": 0.289, "adversarial": 0.422},
        ("cifar10", "relu"): {"standard": 0.031, "adversarial": 0.365},
        ("cifar10", "mlp-attn"): {"standard": 0.191, "adversarial": 0.386},
    },
}

# Thm 4.7 as applied to real data: kappa(G) and the predicted widths.
KAPPA = {
    "source": "Thm 4.7 discussion (kappa(G) of the data; measurement details not stated)",
    "values": {"mnist": 1.2e3, "cifar10": 8.7e3},
}
PREDICTED_WIDTH_LOWER_BOUNDS = {
    "source": "Thm 4.7 discussion ('m >> ...'; v1: kappa^6/eps^2, v2: kappa_d^6 n log n)",
    "v1": {"mnist": 1e18, "cifar10": 1e24},
    "v2": {"mnist": 1e24, "cifar10": 1e29},
}

# Headline: MLP-Attn / 2L-ReLU flip-rate ratio.
HEADLINE_RATIO = {
    "source": "Abstract (v1: 6-9x; v2: 2-9x)",
    "v1": (6.0, 9.0),
    "v2": (2.0, 9.0),
}


def paper_ntk_distance(model: str, dataset: str, width: int) -> float | None:
    values = NTK_DISTANCE_TABLE["values"].get((model, dataset))
    if values is None or width not in NTK_DISTANCE_TABLE["widths"]:
        return None
    return values[NTK_DISTANCE_TABLE["widths"].index(width)]


def all_numbers() -> list[dict]:
    """Every reported number as a flat list of {source, quantity, key, value} rows (for results.json)."""
    rows: list[dict] = []
    for (model, data), vals in NTK_DISTANCE_TABLE["values"].items():
        for m, v in zip(NTK_DISTANCE_TABLE["widths"], vals):
            rows.append({"source": NTK_DISTANCE_TABLE["source"], "quantity": "ntk_distance",
                         "model": model, "dataset": data, "width": m, "value": v})
    for table in (FLIP_RATE_10CLASS, FLIP_RATE_BINARY):
        for (data, model), vals in table["values"].items():
            for attack, v in vals.items():
                rows.append({"source": table["source"], "quantity": "flip_rate", "dataset": data,
                             "model": model, "attack": attack, "eps": table["eps"], "value": v})
    for (data, model), vals in FLIP_RATE_ADV_TRAINING["values"].items():
        for training, v in vals.items():
            rows.append({"source": FLIP_RATE_ADV_TRAINING["source"], "quantity": "flip_rate", "dataset": data,
                         "model": model, "attack": "pgd", "training": training, "value": v})
    for data, v in KAPPA["values"].items():
        rows.append({"source": KAPPA["source"], "quantity": "kappa_G", "dataset": data, "value": v})
    for version in ("v1", "v2"):
        for data, v in PREDICTED_WIDTH_LOWER_BOUNDS[version].items():
            rows.append({"source": PREDICTED_WIDTH_LOWER_BOUNDS["source"], "quantity": f"predicted_width_{version}",
                         "dataset": data, "value": v, "relation": ">>"})
    for version in ("v1", "v2"):
        lo, hi = HEADLINE_RATIO[version]
        rows.append({"source": HEADLINE_RATIO["source"], "quantity": f"headline_ratio_{version}",
                     "low": lo, "high": hi})
    return rows
