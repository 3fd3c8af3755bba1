"""Producers (config/producers.yaml, fastcert.method.analysis): Table 5's gains against the closed
forms and the paper, Figure 1's bound explosion at init, and the document the table and figure read."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from fastcert.io import atomic_write_json
from fastcert.method.analysis import PRODUCERS, produce
from fastcert.reporting.collect import Manifest, load_producer
from fastcert.reporting.tables import build_target, load_paper, normalize

ROOT = Path(__file__).resolve().parents[1]
DECLARED = yaml.safe_load((ROOT / "config" / "producers.yaml").read_text())
# n/2 * E|W| for each distribution over the fan-in n, derived here independently of fastcert.method.init
CLOSED_FORMS = {
    "Xavier (uniform)": lambda n: n / 2 * (1 / math.sqrt(n)) / 2,  # U(±a): E|W| = a/2
    "Xavier (Gaussian)": lambda n: n / 2 * math.sqrt(1 / n) * math.sqrt(2 / math.pi),  # N(0,s²): s·√(2/π)
    "Kaiming (uniform)": lambda n: n / 2 * math.sqrt(6 / n) / 2,
    "Kaiming (Gaussian)": lambda n: n / 2 * math.sqrt(2 / n) * math.sqrt(2 / math.pi),
    "IBP Initialization": lambda n: n / 2 * (math.sqrt(2 * math.pi) / n) * math.sqrt(2 / math.pi),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The producers are small tensor ops: one thread avoids oversubscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_declared_producer_names_a_function_and_the_tables_it_feeds():
    assert set(DECLARED) == {"table5_gains", "figure1_widths"}
    for name, declared in DECLARED.items():
        assert declared["function"] in PRODUCERS, name
        assert declared["for"], name


@pytest.fixture(scope="module")
def table5_document(tmp_path_factory) -> Path:
    """Table 5's producer as the workflow runs it, written and read back as JSON."""
    path = tmp_path_factory.mktemp("producers") / "table5_gains.json"
    atomic_write_json(path, produce("table5_gains", DECLARED["table5_gains"]))
    return path


def test_table5_gains_match_the_closed_forms(table5_document):
    document = json.loads(table5_document.read_text())
    assert (document["producer"], document["for"], document["parameters"]["trials"]) == (
        "table5_gains",
        ["table5"],
        100,
    )
    rows = {(row["key"]["init"], row["key"]["n"]): row["values"] for row in document["rows"]}
    assert len(rows) == 6 * 4 == len(document["rows"])
    for (label, n), values in rows.items():
        if label == "Orthogonal":
            assert values["closed_form"] is None and values["gain"] > 1  # no closed form; still explodes
            continue
        assert values["closed_form"] == pytest.approx(CLOSED_FORMS[label](n), rel=1e-12)
        assert values["gain"] == pytest.approx(values["closed_form"], rel=0.03), (label, n)


def test_table5_from_the_document_agrees_with_every_printed_value(table5_document):
    # the paper's values fit sqrt(6n)/4 for Kaiming (uniform), not its printed sqrt(3/4)·sqrt(n)
    table = build_target(
        "table5",
        load_paper(ROOT / "config" / "paper_results.yaml"),
        Manifest("table5", "smoke", []),
        producers=[load_producer(table5_document)],
    )
    rows = [row for row in table.rows if row.kind == "run"]
    assert len(rows) == 24 and all(row.n_text == "1/1" for row in rows)
    for row in rows:
        gain = next(cell for cell in row.cells if cell.metric == "gain")
        assert gain.agree is True, (row.key, gain)
    kaiming = next(r for r in rows if r.key["method"] == "Kaiming (uniform)" and normalize(r.key["n"]) == 32768)
    assert kaiming.cells[0].ours == pytest.approx(math.sqrt(6 * 32768) / 4)
    assert "trials 100, seed 0" in table.caption and "identical at every scale" in table.caption


def test_figure1_widths_explode_except_with_ibp_init():
    declared = copy.deepcopy(DECLARED["figure1_widths"])
    declared["parameters"]["model"]["width"] = 0.125  # the same computation, fast enough for a test
    declared["parameters"]["batch"] = 4
    document = json.loads(json.dumps(produce("figure1_widths", declared), allow_nan=False))
    widths: dict[str, list[float]] = {}
    for row in document["rows"]:
        assert row["key"]["layer"] == len(widths.setdefault(row["key"]["init"], []))  # layers in order
        widths[row["key"]["init"]].append(row["values"]["width"])
    assert len({w[0] for w in widths.values()}) == 1  # the same input box for every scheme
    assert all(len(w) == 7 for w in widths.values())  # input + 5 conv ReLUs + the hidden FC ReLU
    growth = {label: math.log(w[-1] / w[0]) for label, w in widths.items()}
    assert abs(growth["IBP initialization"]) < 1.0
    for label in ("Xavier (uniform)", "Xavier (Gaussian)", "Kaiming (uniform)", "Kaiming (Gaussian)", "Orthogonal"):
        assert growth[label] > 5.0, (label, growth[label])


def test_bad_declarations_are_named():
    with pytest.raises(ValueError, match=r"config/producers.yaml: x.function 'nope' is not one of"):
        produce("x", {"function": "nope", "parameters": {}})
    with pytest.raises(ValueError, match=r"x.parameters do not fit difference_gains: .*trial"):
        produce(
            "x", {"function": "difference_gains", "parameters": {"schemes": {}, "fan_ins": [], "trial": 1, "seed": 0}}
        )
