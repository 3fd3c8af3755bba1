# Manifests, tables, figures and the reports (PDF, and an HTML page that needs no TeX). The product
# scripts belong to the tables module (workflow/scripts/table.py, figure.py, report.py,
# report_html.py); they read snakemake.input.manifest,
# snakemake.input.results (every run's result.json; metrics.jsonl sits next to it) and
# snakemake.config.


wildcard_constraints:
    target="|".join(MANIFESTS),
    table="|".join(TABLES),
    figure="|".join(FIGURES),


rule manifest:
    output:
        f"{RESULTS}/manifests/{{target}}.json",
    log:
        f"{LOGS}/manifests/{{target}}.log",
    params:
        document=lambda wildcards: target_manifest(wildcards.target),
    script:
        "../scripts/manifest.py"


rule table:
    input:
        manifest=f"{RESULTS}/manifests/{{table}}.json",
        results=lambda wildcards: run_files(wildcards.table),
        producers=lambda wildcards: producer_inputs(wildcards.table),
        paper=config["paper_results"],
    output:
        report(
            f"{RESULTS}/{{table}}.tex",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        f"{LOGS}/tables/{{table}}.log",
    script:
        "../scripts/table.py"


rule figure:
    input:
        manifest=f"{RESULTS}/manifests/{{figure}}.json",
        results=lambda wildcards: run_files(wildcards.figure),
        producers=lambda wildcards: producer_inputs(wildcards.figure),
        paper=config["paper_results"],
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        # the PNG goes into the HTML report: browsers show it inline (the PDF is for LaTeX)
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{LOGS}/figures/{{figure}}.log",
    script:
        "../scripts/figure.py"


rule report_pdf:
    input:
        tables=expand(f"{RESULTS}/{{table}}.tex", table=TABLES),
        figures=expand(f"{RESULTS}/figures/{{figure}}.pdf", figure=FIGURES),
        manifests=expand(f"{RESULTS}/manifests/{{target}}.json", target=MANIFESTS),
        producers=expand("results/producers/{producer}.json", producer=PRODUCERS),
        paper=config["paper_results"],
    output:
        report(f"{REPORTS}/report.pdf", caption="../report/report.rst", category="Report"),
    log:
        f"{LOGS}/report.log",
    params:
        scales=SCALE_OVERVIEW,
    script:
        "../scripts/report.py"


# The same report as one self-contained page (figures embedded, CSS inline, no scripts): opens from a
# copied folder on any machine, no TeX needed. It rebuilds the tables from the manifests and runs, as the
# PDF does, so it needs only what the tables need (at the demo scale: Table 1's three runs).
rule report_html:
    input:
        figures=expand(f"{RESULTS}/figures/{{figure}}.png", figure=FIGURES),
        manifests=expand(f"{RESULTS}/manifests/{{target}}.json", target=MANIFESTS),
        results=sorted({path for target in TABLES for path in run_files(target)}),
        producers=expand("results/producers/{producer}.json", producer=PRODUCERS),
        paper=config["paper_results"],
        plan=f"{RESULTS}/plan.tsv",
    output:
        report(f"{REPORTS}/report.html", caption="../report/report_html.rst", category="Report"),
    log:
        f"{LOGS}/report_html.log",
    params:
        scales=SCALE_OVERVIEW,
    script:
        "../scripts/report_html.py"
