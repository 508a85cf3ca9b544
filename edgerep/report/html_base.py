"""The shared skeleton of edgerep's HTML pages: one style, escaping, tables, badges, embedded images.

Pages are self-contained: no script, no font or style from the network; images are embedded as
base64 PNG or linked as files that sit beside the page.
"""
from __future__ import annotations

import base64
import html
from typing import Iterable, Sequence

CSS = """
:root { --ok: #2e7d32; --warn: #b26a00; --bad: #c62828; --muted: #666; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328;
       line-height: 1.45; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2em 2em 3em; }
nav.top { position: sticky; top: 0; background: #f6f8fa; border-bottom: 1px solid var(--line);
          padding: .5em 2em; font-size: 14px; z-index: 2; }
nav.top a { margin-right: 1.1em; color: #0550ae; text-decoration: none; }
nav.top a:hover { text-decoration: underline; }
[id] { scroll-margin-top: 3em; }
h1 { font-size: 1.6em; margin: .4em 0 .2em; }
h2 { font-size: 1.25em; margin: 1.8em 0 .5em; padding-top: .3em; border-top: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
p.sub, .muted { color: var(--muted); }
table { border-collapse: collapse; font-size: 14px; margin: .4em 0 1em; }
th, td { border: 1px solid var(--line); padding: 4px 9px; vertical-align: top; }
th { background: #f6f8fa; text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 15em; }
tr.fail td { background: #fdecea; } tr.pass td { background: #f0f8f0; }
.badge { display: inline-block; color: #fff; padding: 1px 8px; border-radius: 10px; font-size: 13px;
         font-weight: 600; vertical-align: middle; }
.badge.ok { background: var(--ok); } .badge.warn { background: var(--warn); } .badge.bad { background: var(--bad); }
.badge.neutral { background: #57606a; }
.verdict { border: 2px solid var(--line); border-radius: 8px; padding: .6em 1em; margin: .8em 0; }
.verdict.ok { border-color: var(--ok); background: #f3faf3; }
.verdict.bad { border-color: var(--bad); background: #fdf3f2; }
.verdict ul { margin: .3em 0 0; padding-left: 1.3em; }
li.fail, p.fail { color: var(--bad); font-weight: 600; }
.noise { color: var(--warn); font-weight: 600; }
figure { margin: .6em 0 1.2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: 13px; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; font-size: 90%; }
footer { color: var(--muted); font-size: 13px; margin-top: 3em; border-top: 1px solid var(--line); padding-top: .8em; }
"""

esc = html.escape


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A whole HTML document: ``nav`` is ``(href, text)`` links shown in a sticky bar."""
    bar = ""
    if nav:
        bar = '<nav class="top">' + "".join(f'<a href="{esc(h)}">{esc(t)}</a>' for h, t in nav) + "</nav>"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{bar}<main>\n{body}\n</main></body></html>\n")


def badge(text: str, kind: str) -> str:
    """A coloured pill: kind is ok, warn, bad or neutral."""
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Iterable[int] = (),
          row_class: Sequence[str] | None = None, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML fragments)."""
    num = set(numeric)
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cls = f' class="{esc(row_class[i])}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td{" class=num" if j in num else ""}>{c if raw else esc(str(c))}</td>'
                        for j, c in enumerate(r))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def kv_table(items: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table (escaped)."""
    return ('<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in items)
            + "</table>")


def png_figure(png: bytes, alt: str, caption: str = "", anchor: str = "") -> str:
    """A figure with the PNG embedded as base64 (no file beside the page needed)."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return (f'<figure{ident}><img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"{cap}</figure>")
