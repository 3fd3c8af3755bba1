"""The experiment engine behind the Snakemake workflow: which runs each table and figure needs at a
scale, their identities and what they cost.

Why a package of its own (and without torch): the workflow asks it at parse time, on the submit host
and again inside every cluster job, and tests call it directly without Snakemake. Modules:
``experiments`` (the grammar of config/experiments.yaml: levels, axes, groups, repeats; run ids;
manifests), ``scales`` (the transformations of config/scales.yaml), ``resources`` (runtime and
memory estimates), ``plan`` (what a scale costs, per target), ``config`` (reading and checking the
workflow's YAML), ``tools`` (programs the rules need) and ``script_log`` (the workflow scripts' log).
Errors are :class:`~fastcert.pipeline.errors.ExperimentError`, which the workflow
turns into its own error type.
"""
