"""LaTeX text helpers shared by the tables and the report.

Why one module: every generated table must compile inside the report *and* on its own (tests wrap
a table in :func:`standalone_document`), so escaping, number formatting, the package list and the
pdflatex call live in one place and cannot drift apart.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2

from fastcert.io import atomic_write_bytes

# Packages every generated table and the report rely on (booktabs rules, check marks, scaling).
PREAMBLE = r"""\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{lmodern}
\usepackage{amsmath}
\usepackage{amssymb}
\usepackage{booktabs}
\usepackage{array}
\usepackage{adjustbox}
\usepackage{graphicx}
\usepackage{longtable}
\usepackage{float}
\usepackage[margin=2cm]{geometry}
\usepackage[font=small]{caption}
"""

_ASCII_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}

# Characters that appear in the paper's labels and formulas but that utf8 inputenc cannot typeset.
_UNICODE = {
    "ℓ": r"$\ell$",
    "∞": r"$\infty$",
    "×": r"$\times$",
    "√": r"$\surd$",
    "π": r"$\pi$",
    "ε": r"$\varepsilon$",
    "λ": r"$\lambda$",
    "τ": r"$\tau$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "†": r"$^\dagger$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "−": "-",
    "–": "--",
    "—": "---",
}


def escape(text: object) -> str:
    """Escape ``text`` for LaTeX text mode; raise on characters pdflatex cannot typeset."""
    out = []
    for ch in str(text):
        if ch in _ASCII_SPECIALS:
            out.append(_ASCII_SPECIALS[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 0x250:  # ASCII and Latin letters: handled by utf8 inputenc + T1 fonts
            out.append(ch)
        else:
            raise ValueError(f"cannot typeset character {ch!r} (U+{ord(ch):04X}) in {text!r}")
    return "".join(out)


def fmt_number(value: float, digits: int) -> str:
    """Fixed-point number with ``digits`` decimals (``-0.00`` printed as ``0.00``)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot format non-finite number {value!r}")
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_pm(mean: float, std: float | None, digits: int) -> str:
    """``mean`` or ``mean±std`` in math mode (no ± when there is no std, e.g. one repeat)."""
    if std is None:
        return fmt_number(mean, digits)
    return f"{fmt_number(mean, digits)}$\\pm${fmt_number(std, digits)}"


def fmt_delta(delta: float, digits: int) -> str:
    """Signed difference, ``+0.00`` style, so that agreement reads at a glance."""
    text = fmt_number(delta, digits)
    return text if text.startswith("-") else "+" + text


def standalone_document(body: str) -> str:
    """A complete document around ``body`` with the report's preamble (for compile checks)."""
    return f"\\documentclass[11pt]{{article}}\n{PREAMBLE}\\begin{{document}}\n{body}\n\\end{{document}}\n"


def pdflatex_available() -> bool:
    """True when ``pdflatex`` is on PATH (tests skip compile checks otherwise)."""
    return shutil.which("pdflatex") is not None


def compile_pdf(tex: str, output: str | os.PathLike, files: dict[str, Path] | None = None, passes: int = 2) -> None:
    """Compile the document ``tex`` with pdflatex in a temporary folder and move the PDF to ``output``.

    ``files`` maps names used inside ``tex`` (``\\input{table1.tex}``) to files copied next to it,
    so that the document never depends on the caller's working directory. Two passes resolve
    references. SOURCE_DATE_EPOCH pins the PDF dates so that equal inputs give equal bytes.
    """
    if not pdflatex_available():
        raise RuntimeError("pdflatex not found on PATH: install TeX Live (texlive-latex-extra) to build PDFs")
    with tempfile.TemporaryDirectory(prefix="fastcert-latex-") as tmp:
        workdir = Path(tmp)
        for name, source in (files or {}).items():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        (workdir / "document.tex").write_text(tex, encoding="utf-8")
        env = dict(os.environ, SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
        for _ in range(passes):
            proc = subprocess.run(
                ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "document.tex"],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
            )
            if proc.returncode != 0:
                raise RuntimeError(f"pdflatex failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        pdf = (workdir / "document.pdf").read_bytes()
        atomic_write_bytes(output, pdf)


@functools.cache
def _environment() -> jinja2.Environment:
    # LaTeX is full of braces and percent signs, so the template delimiters are << >> and <% %>.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fastcert.reporting", "templates"),
        block_start_string="<%",
        block_end_string="%>",
        variable_start_string="<<",
        variable_end_string=">>",
        comment_start_string="<#",
        comment_end_string="#>",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )


def render_template(template: str, **context: object) -> str:
    """Render ``fastcert/reporting/templates/<name>``; values must already be LaTeX (see :func:`escape`)."""
    return _environment().get_template(template).render(**context)
