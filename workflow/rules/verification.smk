# Beyond the paper (optional, not part of `all`): Table 1's trained models re-verified with the
# cascade of `fastcert verify` (IBP, then CROWN-IBP and CROWN on what is still uncertified) on a
# class-balanced subset of config["verification"]["test_size"] test images, rendered beside the
# paper's IBP numbers:  snakemake --cores 2 --config scale=demo -- results/demo/verification.md
# A run with no model to verify (diverged, interrupted, no best checkpoint) is not verified: its JSON
# says why and the table names it (fastcert.reporting.verification).


rule verify_checkpoint:
    input:
        result=f"{RUNS_DIR}/{{run_id}}/{RESULT_FILE}",
    output:
        f"{RESULTS}/verification/{{run_id}}.json",
    log:
        f"{LOGS}/verification/{{run_id}}.log",
    threads: SCALE["threads"]
    params:
        verifiers=config["verification"]["verifiers"],
        test_size=config["verification"]["test_size"],
    script:
        "../scripts/verify_checkpoint.py"


rule verification_table:
    input:
        manifest=f"{RESULTS}/manifests/table1.json",
        verifications=lambda wildcards: [
            f"{RESULTS}/verification/{Path(run_dir).name}.json" for run_dir in EXPANSION.run_dirs("table1")
        ],
        paper=config["paper_results"],
    output:
        f"{RESULTS}/verification.md",
    log:
        f"{LOGS}/verification/table.log",
    script:
        "../scripts/verification.py"
