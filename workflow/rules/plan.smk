# What a scale costs before anything is launched: runs per target (own and shared with other
# targets), distinct runs, estimated device-hours (GPU-hours at paper scale).


rule plan:
    input:
        manifests=expand(f"{RESULTS}/manifests/{{target}}.json", target=MANIFESTS),
    output:
        report(f"{RESULTS}/plan.tsv", caption="../report/plan.rst", category="Plan"),
    log:
        f"{LOGS}/plan.log",
    params:
        scale=config["scale"],
        scale_description=SCALE["description"],
        device_hours=device_hours(),
        workstation=workstation(),
    script:
        "../scripts/plan.py"
