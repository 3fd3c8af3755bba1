"""HTML for the tables and the report page: a second renderer of the same :class:`Table` objects.

Why a converter: the table model's text (captions, headers, row labels, notes) is written once, in
the small LaTeX subset the layouts and :func:`fastcert.reporting.latex.escape` use, and the LaTeX
renderer passes it through unchanged. This module turns that subset into HTML (ε, subscripts,
italics) instead of keeping a second copy of every caption; a command it does not know is an error
naming it, so a new caption cannot leak backslashes into the page. Numbers are formatted by the same
functions as in LaTeX, so both renderers print the same digits.
"""

from __future__ import annotations

import functools
from html import escape as html_escape
from typing import Any

import jinja2
from markupsafe import Markup

from fastcert.reporting.latex import fmt_delta, fmt_number
from fastcert.reporting.tables import NOTES, Cell, Row, Table, metric_width

_SYMBOLS = {  # commands that stand for one character
    "varepsilon": "ε",
    "pm": "±",
    "times": "×",
    "checkmark": "✓",
    "ell": "ℓ",
    "infty": "∞",
    "surd": "√",
    "pi": "π",
    "lambda": "λ",
    "tau": "τ",
    "Delta": "Δ",
    "dagger": "†",
    "cdot": "·",
    "leq": "≤",
    "geq": "≥",
    "log": "log",
    "max": "max",
    "textbackslash": "\\",
    "textasciitilde": "~",
    "textasciicircum": "^",
    "textless": "<",
    "textgreater": ">",
}
_ESCAPED = set("%&_#${} ,")  # \% \& ... : the character itself (\, a thin space, shown as a space)
_WRAPPERS = {"textit": "i", "emph": "em", "textbf": "strong", "texttt": "code"}
_SCRIPT = {"L": "ℒ"}  # \mathcal letters the captions use
_MATH_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _Converter:
    """A recursive reader of the LaTeX subset: text, ``$...$`` math, groups and known commands."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"cannot show {what} in HTML (in {self.text!r})")

    def peek(self, length: int = 1) -> str:
        return self.text[self.at : self.at + length]

    def run(self, math: bool = False, upright: bool = False, until: str | None = None) -> str:
        out: list[str] = []
        while self.at < len(self.text):
            char = self.text[self.at]
            if until is not None and char == until:
                self.at += 1
                return "".join(out)
            self.at += 1
            if char == "\\":
                out.append(self.command(math, upright))
            elif char == "{":
                out.append(self.run(math, upright, "}"))
            elif char == "}":
                raise self.error("an unmatched '}'")
            elif char == "$":
                if math:
                    raise self.error("nested '$'")
                out.append(self.run(True, False, "$"))
            elif char in "^_":
                if not math:
                    raise self.error(f"{char!r} outside math")
                tag = "sup" if char == "^" else "sub"
                out.append(f"<{tag}>{self.argument(math, upright)}</{tag}>")
            elif char == "~":
                out.append("\u00a0")
            elif char == "-" and not math:
                dashes = 1
                while self.peek() == "-" and dashes < 3:
                    self.at, dashes = self.at + 1, dashes + 1
                out.append({1: "-", 2: "–", 3: "—"}[dashes])
            elif char in "`'" and not math and self.peek() == char:
                self.at += 1
                out.append("“" if char == "`" else "”")
            elif math and char == "-":
                out.append("−")
            elif math and not upright and char in _MATH_LETTERS:
                out.append(f"<i>{char}</i>")
            else:
                out.append(html_escape(char))
        if until is not None:
            raise self.error(f"a missing {until!r}")
        return "".join(out)

    def argument(self, math: bool, upright: bool) -> str:
        """One argument: a ``{group}``, a command, or one character."""
        if self.peek() == "{":
            self.at += 1
            return self.run(math, upright, "}")
        if self.peek() == "\\":
            self.at += 1
            return self.command(math, upright)
        char = self.peek()
        if not char:
            raise self.error("a missing argument")
        self.at += 1
        return f"<i>{char}</i>" if math and not upright and char in _MATH_LETTERS else html_escape(char)

    def command(self, math: bool, upright: bool) -> str:
        name = self.peek()
        if not name:
            raise self.error("a trailing backslash")
        if name in _ESCAPED:
            self.at += 1
            return html_escape(name) if name not in " ," else " "
        start = self.at
        while self.at < len(self.text) and self.text[self.at].isalpha():
            self.at += 1
        name = self.text[start : self.at]
        if not name:
            raise self.error(f"the command \\{self.peek()}")
        while math and self.peek() == " ":  # math ignores the space after a command
            self.at += 1
        if name in _SYMBOLS:
            return html_escape(_SYMBOLS[name])
        if name in _WRAPPERS:
            tag = _WRAPPERS[name]
            return f"<{tag}>{self.argument(math, upright)}</{tag}>"
        if name == "mathrm":
            return self.argument(math, True)
        if name == "mathcal":
            letter = self.argument(math, True)
            if letter not in _SCRIPT:
                raise self.error(f"\\mathcal{{{letter}}}")
            return _SCRIPT[letter]
        if name == "hat":  # the combining circumflex goes on the letter, inside its <i>
            letter = self.argument(math, upright)
            return f"{letter[:-4]}\u0302</i>" if letter.endswith("</i>") else f"{letter}\u0302"
        if name == "sqrt":
            return f"√({self.argument(math, upright)})"
        if name == "frac":
            numerator = self.argument(math, upright)
            return f"{numerator}/{self.argument(math, upright)}"
        raise self.error(f"the command \\{name}")


def tex_to_html(text: object) -> Markup:
    """HTML for ``text`` in the tables' LaTeX subset (see the module docstring)."""
    return Markup(_converted(str(text)))


@functools.lru_cache(maxsize=4096)
def _converted(text: str) -> str:  # a page repeats its labels, notes and headers hundreds of times
    return _Converter(text).run()


# ---------------------------------------------------------------------------------------------
# tables

OUTSIDE = "outside the paper's ± std or the stated tolerance"


def _pm(mean: float, std: float | None, digits: int) -> str:
    return fmt_number(mean, digits) + ("" if std is None else f" ± {fmt_number(std, digits)}")


def _cells(row: Row, table: Table) -> list[dict[str, Any]]:
    """The value cells of one row: text (HTML), CSS class and whether each is outside the tolerance."""
    out = []
    for cell, metric in zip(row.cells, table.layout["metrics"], strict=True):
        digits = metric["digits"]
        out += _metric_cells(row, cell, digits)[: metric_width(metric)]
    return out


def _metric_cells(row: Row, cell: Cell, digits: int) -> list[dict[str, Any]]:
    if row.kind == "literature":
        ours = Markup("")
    elif cell.ours is None:
        ours = tex_to_html(NOTES[cell.note or "n/a"])
    else:
        ours = Markup(html_escape(_pm(cell.ours, cell.ours_std, digits)))
    if cell.paper is None:
        paper = Markup("—")
    elif isinstance(cell.paper, str):
        paper = Markup(html_escape(cell.paper))
    else:
        paper = Markup(html_escape(_pm(float(cell.paper), cell.paper_std, digits)))
    delta = Markup("") if cell.delta is None else Markup(html_escape(fmt_delta(cell.delta, digits).replace("-", "−")))
    state = {True: "agree", False: "outside"}.get(cell.agree) if cell.agree is not None else None
    return [
        {"html": ours, "state": state, "delta": False},
        {"html": paper, "state": None, "delta": False},
        {"html": delta, "state": state, "delta": True},
    ]


def table_context(table: Table, number: int) -> dict[str, Any]:
    """What ``table.html.j2`` needs: headers, groups of rows, cells, in HTML."""
    layout = table.layout
    show_n = layout.get("show_n", True)
    columns = [tex_to_html(header) for _, header in layout["columns"]]
    metrics = []
    for metric in layout["metrics"]:
        unit = metric.get("unit")
        width = metric_width(metric)
        metrics.append(
            {
                "header": tex_to_html(metric["header"]),
                "unit": unit,
                "width": width,
                "subheaders": ["Ours", "Paper", "Δ"][:width],
            }
        )
    groups: list[dict[str, Any]] = []
    for row in table.rows:
        if not groups or groups[-1]["label"] != row.group:
            groups.append({"label": row.group, "html": tex_to_html(row.group), "rows": []})
        groups[-1]["rows"].append(
            {
                "literature": row.kind == "literature",
                "label": [tex_to_html(text) for text in row.label],
                "n": tex_to_html(row.n_text),
                "cells": _cells(row, table),
            }
        )
    return {
        "name": table.name,
        "number": number,
        "caption": tex_to_html(table.caption),
        "columns": columns,
        "show_n": show_n,
        "key_columns": len(columns) + (1 if show_n else 0),
        "metrics": metrics,
        "groups": groups,
        "outside": OUTSIDE,
    }


def render_table(table: Table, number: int) -> Markup:
    """``table`` as an HTML ``<table>`` with caption, scoped headers and marked disagreements."""
    return Markup(environment().get_template("table.html.j2").render(table=table_context(table, number)))


@functools.cache
def environment() -> jinja2.Environment:
    """The HTML templates (fastcert/reporting/templates/*.html.j2): autoescaped, ``tex`` filter."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fastcert.reporting", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tex"] = tex_to_html
    return env
