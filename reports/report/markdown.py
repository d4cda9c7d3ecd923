"""A small Markdown document builder; every user-controlled string goes through :func:`esc`."""

from __future__ import annotations

import html
import math
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")


def esc(text) -> str:
    """Text safe inside Markdown and its HTML: HTML-escaped, Markdown specials backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def num(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return esc(x)
    x = float(x)
    if not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def interval(ci, as_pct: bool = False) -> str:
    if not ci:
        return "—"
    f = pct if as_pct else num
    return f"[{f(ci[0])}, {f(ci[1])}]"


def pow10(log10_value) -> str:
    """10^x for a log10 (never a 400-digit number)."""
    return "—" if log10_value is None else f"10^{float(log10_value):.1f}"


class Doc:
    """Markdown lines in order; the rendering is a pure function of what was added."""

    def __init__(self):
        self.lines: list[str] = []

    def h(self, level: int, text: str) -> None:
        self.lines += [f"{'#' * level} {text}", ""]

    def p(self, text: str) -> None:
        self.lines += [text, ""]

    def bullets(self, items) -> None:
        self.lines += [f"- {item}" for item in items] + [""]

    def table(self, header: list[str], rows: list[list[str]], caption: str | None = None) -> None:
        if caption:
            self.lines += [f"*{caption}*", ""]
        if not rows:
            self.lines += ["(no cells)", ""]
            return
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.lines.append("| " + " | ".join(str(c).replace("\n", " ") for c in r) + " |")
        self.lines.append("")

    def image(self, name: str, alt: str) -> None:
        self.lines += [f"![{esc(alt)}]({name})", ""]

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"
