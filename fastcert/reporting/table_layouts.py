"""Declarative layouts of the paper's Tables 1–10 (data only; rendered by :mod:`fastcert.reporting.tables`).

Why data: the ten tables differ only in which keys identify a row, which values are shown, where
our numbers come from and how rows are grouped. Writing that down as dictionaries keeps one
rendering engine, and a test can check each layout against ``config/paper_results.yaml``.

Layout keys:

* ``caption``: what the table shows (LaTeX); scale, data and provenance are appended by the engine.
* ``paper_rows``: list of the paper table's rows in results.yaml (default ``rows``);
  ``paper_filter``: ``{key: value}`` rows must have.
* ``match``: keys that identify a row, shared by the paper's rows and the run keys of the manifest;
  ``aliases``: other names a run key may use for a match key.
* ``group``: keys whose values open a new block, ``group_label``: its LaTeX format string
  (``{key}`` placeholders, filled with formatted values); ``labels``: ``{key: {value: text}}``.
  The engine appends the epochs the group's runs trained at this scale and the paper's (from the
  manifest); ``paper_epochs``: the paper's schedule text for a group without runs (format string).
* ``observations``: ``runs`` (default: the manifest's runs) or ``producer`` (the rows of the one
  producer document config/producers.yaml makes for this table; metric sources ``{from: producer,
  field}``).
* ``columns``: ``[[key, header]]`` shown at the left of each row.
* ``metrics``: shown values, each ``{name, header, paper, paper_std, source, digits, compare, unit}``
  (``unit``: shown in the HTML header, e.g. ``%``, ``s``; the LaTeX caption states it);
  ``source`` says where our value comes from (see :func:`fastcert.reporting.tables.extract`).
* ``best``: ``{label, of, by}``: a row ``method = label`` holding the single best run of ``of``
  (lowest ``by``), the authors' "Ours (best)".
* ``expand_runs``: ``{key: [values]}``: one observation per run and value (Table 6's epochs).
* ``expand_paper``: ``{key, values, field}``: melts wide paper columns into rows (Table 5).
* ``literature``: quoted-only rows: ``{rows, filter, group_label, label, paper}`` (metric → paper field).
* ``tolerance``: ``{kind: abs|rel, value}`` for agreement where the paper prints no std.
* ``notes``: extra caption text.
* ``show_n``: whether to print the completed/listed run count (default true).
"""

from __future__ import annotations

from typing import Any

from fastcert.records import Phase

_PERCENT = {"kind": "abs", "value": 1.0}


def _errors() -> list[dict[str, Any]]:
    """Standard and verified error (%) from a run's result.json checkpoint entry."""
    return [
        {
            "name": "standard",
            "header": "Standard",
            "paper": "standard",
            "paper_std": "standard_std",
            "source": {"from": "result", "field": "standard_err", "percent": True},
            "digits": 2,
            "unit": "%",
        },
        {
            "name": "verified",
            "header": "Verified",
            "paper": "verified",
            "paper_std": "verified_std",
            "source": {"from": "result", "field": "verified_err", "percent": True},
            "digits": 2,
            "unit": "%",
        },
    ]


def _timing() -> list[dict[str, Any]]:
    """Per-epoch time in each ε phase and the total (seconds): never compared, hardware differs."""
    phases = [
        (Phase.EPS0, "epoch_time_eps_0", r"$\varepsilon=0$"),
        (Phase.RAMP, "epoch_time_eps_ramp", r"$0<\varepsilon<\varepsilon_{t}$"),
        (Phase.TARGET, "epoch_time_eps_target", r"$\varepsilon=\varepsilon_{t}$"),
    ]
    metrics = [
        {
            "name": phase,
            "header": header,
            "paper": paper,
            "source": {"from": "epoch_time", "phase": phase},
            "digits": 1,
            "unit": "s",
            "compare": False,
        }
        for phase, paper, header in phases
    ]
    metrics.append(
        {
            "name": "total",
            "header": "Total",
            "paper": "total_time",
            "source": {"from": "total_time"},
            "digits": 1,
            "unit": "s",
            "compare": False,
        }
    )
    return metrics


_SCHEDULE = "{schedule_total} ({schedule_phases})"
_TIMING_NOTE = (
    r"Times in seconds: per-epoch wall-clock time in each $\varepsilon$ phase and the run's "
    r"measured total for its own schedule. The paper's times are estimates on one "
    r"NVIDIA RTX 2080 Ti; ours come from different hardware, so they are shown side by side "
    r"but not compared."
)

LAYOUTS: dict[str, dict[str, Any]] = {
    "table1": {
        "caption": r"Standard and verified error (\%) on MNIST ($\varepsilon_t=0.4$) and CIFAR-10 "
        r"($\varepsilon_t=8/255$), all models with BN after every layer.",
        "match": ["dataset", "schedule_total", "schedule_phases", "model", "method"],
        "group": ["dataset", "schedule_total", "schedule_phases"],
        "group_label": "{dataset}",
        "paper_epochs": _SCHEDULE,
        "columns": [["method", "Method"], ["model", "Model"]],
        "metrics": _errors(),
        "best": {"label": "Ours (best)", "of": "Ours", "by": "verified"},
        "literature": {
            "rows": "literature_rows",
            "group_label": "{dataset}: literature (quoted from the paper)",
            "label": "{label}; warmup {warmup}, {schedule_total} epochs",
            "paper": {"standard": "standard", "verified": "verified"},
        },
        "tolerance": _PERCENT,
    },
    "table2": {
        "caption": r"Standard and verified error (\%) on TinyImageNet ($\varepsilon_t=1/255$), "
        r"all models with BN after every layer.",
        "match": ["dataset", "schedule_total", "schedule_phases", "model", "method"],
        "group": ["dataset", "schedule_total", "schedule_phases"],
        "group_label": "{dataset}",
        "paper_epochs": _SCHEDULE,
        "columns": [["model", "Model"], ["method", "Method"]],
        "metrics": _errors(),
        "tolerance": _PERCENT,
    },
    "table3": {
        "caption": r"Training time of CNN-7 on CIFAR-10: short warmup (ours) against the literature's "
        r"long schedules (quoted).",
        "paper_filter": {"section": "short_warmup"},
        "match": ["dataset", "model", "method"],
        "group": [],
        "group_label": "CNN-7, CIFAR-10",
        "paper_epochs": "160 (1+80+79)",
        "columns": [["method", "Method"]],
        "metrics": _timing(),
        "literature": {
            "rows": "rows",
            "filter": {"section": "literature"},
            "group_label": "Literature, total of the full schedule (quoted from the paper)",
            "label": "{method} ({reference}), {epochs} epochs",
            "paper": {
                Phase.EPS0: "epoch_time_eps_0",
                Phase.RAMP: "epoch_time_eps_ramp",
                Phase.TARGET: "epoch_time_eps_target",
                "total": "total_time",
            },
        },
        "notes": _TIMING_NOTE,
    },
    "table4": {
        "caption": r"Ablation, CNN-7 on CIFAR-10 ($\varepsilon_t=8/255$): BN after convolutions, BN after "
        r"the hidden FC layer, IBP initialization, $\mathcal{L}_{\mathrm{tightness}}$, "
        r"$\mathcal{L}_{\mathrm{relu}}$; standard and verified error (\%).",
        "match": ["schedule_total", "bn_conv", "bn_fc", "ibp_init", "l_tightness", "l_relu"],
        "group": ["schedule_total"],
        "group_label": "CIFAR-10, CNN-7",
        "paper_epochs": "{schedule_total}",
        "columns": [
            ["bn_conv", "BN-Conv"],
            ["bn_fc", "BN-FC"],
            ["ibp_init", "IBP init"],
            ["l_tightness", r"$\mathcal{L}_{\mathrm{tight}}$"],
            ["l_relu", r"$\mathcal{L}_{\mathrm{relu}}$"],
        ],
        "metrics": _errors(),
        "tolerance": _PERCENT,
    },
    "table5": {
        "caption": r"Difference gain $E(\Delta_i)/E(\Delta_{i-1})$ of weight initializations at fan-in "
        r"$n_i$: our closed form and our empirical mean over random trials, against the "
        r"paper's empirical values.",
        "observations": "producer",
        "match": ["method", "n"],
        "aliases": {"method": ["init"]},
        "group": ["method"],
        "group_label": "{method}; the paper's closed form: {closed_form}",
        "columns": [["n", "$n_i$"]],
        "expand_paper": {"key": "n", "values": [27, 576, 1152, 32768], "field": "gain_n{}", "into": "gain"},
        "metrics": [
            {
                "name": "closed_form",
                "header": "Closed form",
                "paper": None,
                "source": {"from": "producer", "field": "closed_form"},
                "digits": 2,
                "compare": False,
            },
            {
                "name": "gain",
                "header": "Empirical",
                "paper": "gain",
                "source": {"from": "producer", "field": "gain"},
                "digits": 2,
            },
        ],
        "tolerance": {"kind": "rel", "value": 0.03},
        "show_n": False,
        "notes": r"Our closed forms are $\frac{n}{2}E|W|$ of each distribution over the fan-in: "
        r"Xavier (uniform) $U(\pm 1/\sqrt{n})$ (PyTorch's default), Xavier (Gaussian) "
        r"$N(0, 1/n)$, Kaiming (uniform) $U(\pm\sqrt{6/n})$, Kaiming (Gaussian) "
        r"$N(0, 2/n)$, IBP $N(0, 2\pi/n^2)$; orthogonal has none. The paper prints "
        r"$\sqrt{3/4}\sqrt{n_i}$ for Kaiming (uniform), but its own empirical values fit "
        r"$\sqrt{6n}/4$. No data and no training are involved.",
    },
    "table6": {
        "caption": r"$\log(\hat{E}(\Delta_m)/\hat{E}(\Delta_0))$ of CNN-7 (full BN) on CIFAR-10 in the first "
        r"training epochs, with and without IBP initialization: test-set mean over batches of the "
        r"model at the end of the epoch (eval mode), from IBP bounds at "
        r"$\varepsilon_{\mathrm{stat}}=\max(\varepsilon, 10^{-6})$ in pixel units, $m$ the last "
        r"ReLU's input; natural log (the paper does not state its base). Epoch 1 has "
        r"$\varepsilon=0$: $10^{-6}$ is the authors' \texttt{--min-eps-reg}, the only "
        r"$\varepsilon$ at which their code bounds an $\varepsilon=0$ batch "
        r"(\texttt{certified.py} \texttt{cert()}, commit 50560c6).",
        "match": ["ibp_init", "epoch"],
        "group": ["ibp_init"],
        "group_label": "{ibp_init}",
        "labels": {"ibp_init": {True: "With IBP initialization", False: "Without IBP initialization"}},
        "columns": [["epoch", "Epoch"]],
        "expand_runs": {"epoch": [1, 2, 3, 4]},
        "metrics": [
            {
                "name": "log_tightness_ratio",
                "header": r"$\log(\hat{E}(\Delta_m)/\hat{E}(\Delta_0))$",
                "paper": "log_tightness_ratio",
                "source": {"from": "metrics", "split": "test", "field": "log_tightness_ratio", "epoch": "key"},
                "digits": 2,
            },
        ],
        "tolerance": {"kind": "abs", "value": 0.5},
    },
    "table7": {
        "caption": r"Training time on every dataset and model: per-epoch time in each $\varepsilon$ phase "
        r"and total, 70-epoch (MNIST), 160-epoch (CIFAR-10) and 80-epoch (TinyImageNet) schedules.",
        "match": ["dataset", "model", "method"],
        "group": ["dataset"],
        "group_label": "{dataset}",
        "columns": [["model", "Model"], ["method", "Method"]],
        "metrics": _timing(),
        "notes": _TIMING_NOTE,
    },
    "table8": {
        "caption": r"BN ablation, CNN-7 on CIFAR-10 ($\varepsilon_t=8/255$, 160 epochs): with or without "
        r"BN's centralization and unitization; active and inactive ReLU neurons (\%, train-set "
        r"mean over the final epoch's batches and over layers, as the authors' train meter) and "
        r"standard and verified error (\%).",
        "match": ["centralization", "unitization"],
        "group": [],
        "group_label": "CIFAR-10, CNN-7",
        "paper_epochs": "160 (1+80+79)",
        "columns": [["centralization", "Centr."], ["unitization", "Unit."]],
        "metrics": [
            {
                "name": "active_relu",
                "header": "Active",
                "paper": "active_relu",
                "paper_std": "active_relu_std",
                "source": {"from": "metrics", "split": "train", "field": "active", "epoch": "last", "percent": True},
                "digits": 2,
                "unit": "%",
            },
            {
                "name": "inactive_relu",
                "header": "Inactive",
                "paper": "inactive_relu",
                "paper_std": "inactive_relu_std",
                "source": {"from": "metrics", "split": "train", "field": "inactive", "epoch": "last", "percent": True},
                "digits": 2,
                "unit": "%",
            },
            *_errors(),
        ],
        "tolerance": _PERCENT,
    },
    "table9": {
        "caption": r"Other perturbation radii, CNN-7: standard and verified error (\%) on MNIST "
        r"($\varepsilon_t = 0.1, 0.3$) and CIFAR-10 ($\varepsilon_t = 2/255, 16/255$).",
        "match": ["dataset", "eps_target", "method"],
        "aliases": {"eps_target": ["eps", "eps_test"]},
        "group": ["dataset", "eps_target"],
        "group_label": r"{dataset}, $\varepsilon_t$ = {eps_target}",
        "columns": [["method", "Method"]],
        "metrics": _errors(),
        "tolerance": _PERCENT,
    },
    "table10": {
        "caption": r"Sensitivity to $\lambda_0$ (Ours), CNN-7 on CIFAR-10 ($\varepsilon_t=8/255$), "
        r"160-epoch schedule: standard and verified error (\%).",
        "match": ["lambda0"],
        "group": [],
        "group_label": "CIFAR-10, CNN-7, Ours",
        "paper_epochs": "160 (1+80+79)",
        "columns": [["lambda0", r"$\lambda_0$"]],
        "metrics": _errors(),
        "tolerance": _PERCENT,
    },
}
