# One training job per distinct run spec: runs/<run_id>/ (run ids and specs come from common.smk).
#
# Only result.json is a declared output of training: Snakemake deletes a job's declared outputs
# before a (re)run, and the runner resumes an interrupted run (SLURM time limit, retry) from
# checkpoint_last.pt together with metrics.jsonl, so those must survive between attempts.
# Shell, not `run:`, because a local `run:` job re-parses the whole workflow in a subprocess.
# A diverged run (runner exit status 3, status "diverged" in result.json) is a final result:
# rerunning would diverge again, so the job succeeds and the tables mark its cells instead of one
# divergence blocking every table that needs the run.


wildcard_constraints:
    run_id=r"[A-Za-z0-9_.+-]+",


rule run_spec:
    output:
        f"{RUNS_DIR}/{{run_id}}/{REQUESTED_SPEC_FILE}",
    log:
        "logs/spec/{run_id}.log",
    params:
        spec=lambda wildcards: spec_yaml(wildcards.run_id),
    shell:
        "(printf '%s' {params.spec:q} > {output}.tmp && mv {output}.tmp {output}) 2> {log}"


rule train:
    input:
        spec=f"{RUNS_DIR}/{{run_id}}/{REQUESTED_SPEC_FILE}",
    output:
        result=f"{RUNS_DIR}/{{run_id}}/{RESULT_FILE}",
    log:
        "logs/train/{run_id}.log",
    retries: config["train"]["retries"]
    threads: SCALE["threads"]
    resources:
        gpu=config["train"]["gpu"],
        runtime=runtime_minutes,
        mem_mb=memory_mb,
    params:
        run_dir=lambda wildcards: f"{RUNS_DIR}/{wildcards.run_id}",
        placement=placement_env(),
    shell:
        "{params.placement} fastcert train --spec {input.spec} --out {params.run_dir} > {log} 2>&1"
        " || {{ status=$?; [ $status -eq 3 ] && echo 'diverged: kept as a result, tables mark its cells' >> {log}"
        " || exit $status; }}"
