"""The names a run spec may use (models, BN modes, initializations, regularizer terms; the training
methods are the keys of the method table, :mod:`fastcert.methods`).

Why a module without torch: the workflow validates every run spec while Snakemake parses the
Snakefile (on the submit host and again inside every cluster job), and the plan and dry runs do
nothing else. Importing torch there costs seconds per parse; these names are all that parsing needs.
The modules that implement each name import their list from here, so the two cannot disagree.
"""

from __future__ import annotations

MODELS = ("cnn7", "wide_resnet", "resnext")
BN_MODES = ("full", "conv", "none")
INIT_SCHEMES = (
    "default",
    "ibp",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
)
REGULARIZER_TERMS = ("tightness", "relu", "std")
