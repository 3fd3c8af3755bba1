"""Table 1's trained models re-verified beyond the paper: verified error under IBP (the paper's
certificate), CROWN-IBP, CROWN and "any" (the cascade of ``fastcert verify``), beside the paper's
IBP number. A Markdown table (results/verification.md), rendered from each run's ``fastcert verify``
JSON; the rows and the paper's numbers are Table 1's (:func:`fastcert.reporting.tables.build_target`).

A run with no model to verify (diverged, interrupted, no best checkpoint: :func:`fastcert.records.unverifiable`)
is not verified: the workflow writes its :func:`skipped` document instead, and its row names the run and the
reason in the *not verified* column, so that a diverged run is neither a failed job nor a silent gap.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from fastcert.records import unverifiable
from fastcert.reporting.collect import Manifest
from fastcert.reporting.tables import build_target

COLUMNS = ("ibp", "crown-ibp", "crown")
SKIPPED = "not_verified"  # the key of a run's document that says why it was not verified


def skipped(run_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """The document that stands for the ``fastcert verify`` JSON of a run with no model to verify; None
    for a run to verify."""
    reason = unverifiable(run_dir)
    return None if reason is None else {"run_dir": str(Path(run_dir)), SKIPPED: reason}


def verification_table(manifest: Manifest, verifications: dict[str, dict[str, Any]], paper: dict[str, Any]) -> str:
    """Markdown: one line per Table 1 row with runs; ``verifications`` maps run directory names to
    their ``fastcert verify`` JSON. Values are verified error in %, mean over the completed repeats."""
    table = build_target(manifest.target, paper, manifest, checkpoint="best")
    n = next((doc["n"] for doc in verifications.values() if SKIPPED not in doc), 0)
    lines = [
        f"Verified error (%) of Table 1's models (best checkpoints) on {n} test images per model, scale "
        f"`{manifest.scale}`; each verifier's column is the cascade up to it (CROWN-IBP and CROWN are "
        "intersected with IBP, so they never certify less than IBP); *any*: certified by any verifier.",
        "",
        "| dataset | model | method | paper (IBP) | IBP | CROWN-IBP | CROWN | any | runs | not verified |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.rows:
        if row.kind != "run":
            continue
        runs = [run for run in manifest.runs if all(row.key.get(k) == v for k, v in run.key.items())]
        if not runs:  # declared by Table 1 but not run at this scale
            continue
        docs: list[dict[str, Any]] = []
        not_verified: list[str] = []
        for run in runs:
            doc = verifications.get(run.run_dir.name)
            why = _why_not_verified(doc, run.usable, str(run.status))
            if doc is not None and why is None:
                docs.append(doc)
            else:
                not_verified.append(f"`{run.run_dir.name}`: {why}")
        paper_ibp = next((cell.paper for cell in row.cells if cell.metric == "verified"), None)
        values = [_mean(docs, name) for name in COLUMNS] + [_mean(docs, None)]
        label = [str(row.key.get(k, "")) for k in ("dataset", "model", "method")]
        cells = [_fmt(paper_ibp), *(_fmt(v) for v in values), str(len(docs)), "; ".join(not_verified) or "—"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in label + cells) + " |")
    return "\n".join(lines) + "\n"


def _why_not_verified(doc: dict[str, Any] | None, usable: bool, status: str) -> str | None:
    """Why a run of a row has no numbers in it (None: it has)."""
    if doc is None:
        return "no verification"
    if SKIPPED in doc:
        return str(doc[SKIPPED])
    return None if usable else status


def _mean(docs: list[dict[str, Any]], verifier: str | None) -> float | None:
    """Mean verified error (%) after ``verifier`` (None: the whole cascade), over runs that ran it."""
    values = [
        100 * (doc["verified_err"] if verifier is None else doc["verifiers"][verifier]["verified_err"])
        for doc in docs
        if verifier is None or verifier in doc["verifiers"]
    ]
    return statistics.fmean(values) if values else None


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"
