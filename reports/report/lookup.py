"""Finding things in a results document: labels, the paper's numbers, tasks, model keys (no statistics)."""

from __future__ import annotations

import re

from malleability.reports.report.markdown import esc

ATTACKS = ("fgsm", "pgd", "mim", "noise")
PRIMARY = "after_vs_init_absolute"


def split_key(key: str) -> tuple[str, str]:
    """'mlp-attn[attention_input=center]' -> ('mlp-attn', 'attention_input=center')."""
    m = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", key)
    return (m.group(1), m.group(2) or "") if m else (key, "")


def model_text(results: dict, key: str) -> str:
    """'patch-attn[attention=linear,image_shape=None]' -> 'Patch-Attn (attention=linear)': options left unset
    (None, the model's own default) are part of the key but say nothing to a reader."""
    base, opts = split_key(key)
    label = results.get("labels", {}).get("models", {}).get(base, base)
    shown = ", ".join(o for o in opts.split(",") if o and not o.endswith("=None"))
    return label + (f" ({shown})" if shown else "")


def model_label(results: dict, key: str) -> str:
    """:func:`model_text`, escaped for Markdown."""
    return esc(model_text(results, key))


def task_label(results: dict, task: str) -> str:
    return esc(results.get("labels", {}).get("datasets", {}).get(task, task))


def paper_flip(results: dict, task: str, model: str, attack: str, training: str | None = None) -> float | None:
    for row in results.get("paper_numbers", []):
        if (row.get("quantity") == "flip_rate" and row.get("dataset") == task and row.get("model") == model
                and row.get("attack") == attack and row.get("training") == training):
            return row["value"]
    return None


def paper_ntk(results: dict, task: str, model: str, width: int) -> float | None:
    for row in results.get("paper_numbers", []):
        if (row.get("quantity") == "ntk_distance" and row.get("dataset") == task and row.get("model") == model
                and row.get("width") == width):
            return row["value"]
    return None


def paper_value(results: dict, quantity: str, task: str) -> float | None:
    for row in results.get("paper_numbers", []):
        if row.get("quantity") == quantity and row.get("dataset") == task:
            return row["value"]
    return None


def is_binary(cell: dict) -> bool:
    return cell.get("classes") not in (None, "all")


def protocol_of(cell: dict) -> str:
    return (cell.get("readings") or "").rsplit("protocol=", 1)[-1] or "paper"


def schedule_of(cell: dict) -> str | None:
    """A summary cell's adversarial-training schedule (None without adversarial training; earlier versions: constant)."""
    if not cell.get("adv_train"):
        return None
    return cell.get("adv_schedule") or "constant"


def ramp_epochs(results: dict) -> int | None:
    """The warm-up length of the 'ramp' schedule in epochs, as the cells recorded it (None: no ramp cell)."""
    for c in cells_of_kind(results, "flip-rate"):
        params = (c.get("result") or {}).get("adv_train_params") or {}
        if params.get("schedule") == "ramp" and params.get("ramp_epochs"):
            return int(params["ramp_epochs"])
    return None


def schedule_label(results: dict, schedule: str | None) -> str:
    """'—' (standard training), 'constant' or 'ramp (R epochs)'."""
    if schedule is None:
        return "—"
    if schedule != "ramp":
        return schedule
    r = ramp_epochs(results)
    return "ramp" if r is None else f"ramp ({r} epochs)"


def find_flip_cell(cells: list[dict], fields: dict, *, adv: bool, schedule: str | None = "constant") -> dict | None:
    """The first summary cell equal to ``fields`` on their keys, trained adversarially or not, and with
    adversarial training under ``schedule`` (ignored for standard training)."""
    want = schedule if adv else None
    return next((c for c in cells if all(c.get(k) == v for k, v in fields.items())
                 and bool(c.get("adv_train")) == bool(adv) and schedule_of(c) == want), None)


def ablation_cells(summ: dict, entry: dict, schedule: str) -> tuple[dict | None, dict | None]:
    """The standard and the adversarially trained summary cell of one ablation entry."""
    fields = {k: entry.get(k) for k in ("dataset", "classes", "attack", "eps", "intervention", "readings", "model")}
    return find_flip_cell(summ["cells"], fields, adv=False), find_flip_cell(summ["cells"], fields, adv=True,
                                                                            schedule=schedule)


def cells_of_kind(results: dict, kind: str) -> list[dict]:
    return [c for c in results.get("cells", []) if c.get("kind") == kind and c.get("status") != "failed"]


def flip_set_sizes(results: dict) -> str:
    sizes = sorted({(c.get("result") or {}).get("n_flip_set") for c in cells_of_kind(results, "flip-rate")} - {None})
    return ", ".join(map(str, sizes)) or "—"
