"""One run: the run spec, data, the training loop, the run directory on disk, verification, the CLI.

Importing this package (or :mod:`.spec`) does not import torch: the workflow validates every spec
while Snakemake parses, and ``fastcert --help`` answers without it.
"""
