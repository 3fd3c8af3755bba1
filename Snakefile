# Reproduction of Shi et al., "Fast Certified Robust Training with Short Warmup" (NeurIPS 2021).
#   snakemake --cores all results/table1.tex          # one table (paper scale: the default)
#   snakemake --cores all --config scale=smoke        # every table, figure and the reports, in minutes
#   snakemake --cores all --config scale=demo -- reports/demo/report.html   # the demo's page, ~10 min
#   snakemake --cores 1 results/plan.tsv              # runs and GPU-hours per table, before launching
#   snakemake --profile slurm                         # everything on a GPU cluster
# A scale other than paper writes under results/<scale>/, reports/<scale>/ and logs/<scale>/
# (e.g. results/smoke/table1.tex); runs/ is shared.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/producers.smk"
include: "workflow/rules/products.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/verification.smk"


onstart:
    # before the first job, and only if a job that will run needs it (not for plans or dry runs)
    asking(require_programs, (job.rule.name for job in workflow.dag.needrun_jobs()))


localrules:
    all,
    run_spec,
    manifest,
    produce,
    table,
    figure,
    report_pdf,
    report_html,
    plan,
    verification_table,


rule all:
    default_target: True
    input:
        expand(f"{RESULTS}/{{table}}.tex", table=TABLES),
        expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=FIGURES, ext=("pdf", "png")),
        f"{REPORTS}/report.pdf",
        f"{REPORTS}/report.html",
