"""report.md -> report.html with markdown-it-py (tables on), plots inlined as data URIs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
         "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
         "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f3f3f3}"
         "img{max-width:100%}code{background:#f5f5f5;padding:0 3px}")


def to_html(markdown_text: str, out_dir: Path, title: str) -> str:
    body = MarkdownIt("commonmark").enable("table").render(markdown_text)

    def inline(match):
        path = out_dir / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([A-Za-z0-9_.-]+\.png)"', inline, body)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")
