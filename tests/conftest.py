"""Suite-wide test policy, so that the default suite stays within ~15 minutes on 2 CPU cores.

* ``@pytest.mark.slow`` tests run only with ``FASTCERT_SLOW=1``;
* ``@pytest.mark.cuda`` tests run only where CUDA is available (``pytest -m cuda``);
* ``@pytest.mark.slurm`` tests (a real local SLURM cluster, Table 1 through ``--profile slurm``)
  run only with ``FASTCERT_SLURM=1``; ``.ci/run`` runs them after the default suite.
"""

from __future__ import annotations

import os

import pytest

OPT_IN = {
    "slow": ("FASTCERT_SLOW", "slow: set FASTCERT_SLOW=1 to run"),
    "slurm": ("FASTCERT_SLURM", "local SLURM cluster test: set FASTCERT_SLURM=1 to run (needs root)"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, (variable, reason) in OPT_IN.items():
        if os.environ.get(variable) == "1":
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.cuda`` tests need a GPU: skipped without one (torch imported only for them)."""
    if "cuda" in item.keywords:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
