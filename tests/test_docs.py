"""The facts docs/architecture.md copies from the code (run-spec defaults, the method table) are the
code's: a default or a method changed in one place and not the other fails here. README's package
example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fastcert.methods import TRAINING_METHODS
from fastcert.run.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_the_run_spec_listing_is_every_key_with_runspecs_default_in_order() -> None:
    section = ARCHITECTURE[ARCHITECTURE.index("### Run spec") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    listed = yaml.safe_load(block.group(1))
    defaults = RunSpec().to_dict()
    assert list(listed) == list(defaults)
    assert listed == defaults


def test_the_method_table_lists_every_training_method_as_fastcert_methods_defines_it() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \| `([a-z_]+)` \| ([a-z, ]+) \| `([a-z-]+)` \| (.+) \|$", ARCHITECTURE, re.M)
    documented = {name: (init, terms, objective, summary) for name, init, terms, objective, summary in rows}
    assert documented == {
        name: (method.init, ", ".join(method.regularizers) or "none", method.objective, method.summary)
        for name, method in TRAINING_METHODS.items()
    }


def test_the_readme_package_example_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"## The package\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert example is not None
    namespace: dict[str, object] = {}
    exec(compile(example.group(1), "README.md", "exec"), namespace)
    assert set(namespace) >= {"loss", "reg", "lower", "upper"}
