# Producers (config/producers.yaml, loaded in common.smk): numbers a table or figure shows that need
# no data and no training, computed once per workflow (identical at every scale) into
# results/producers/<name>.json. The table and figure rules read them through producer_inputs().


wildcard_constraints:
    producer="|".join(PRODUCERS),


rule produce:
    output:
        "results/producers/{producer}.json",
    log:
        "logs/producers/{producer}.log",
    threads: 1
    params:
        declaration=lambda wildcards: PRODUCERS[wildcards.producer],
        where=PRODUCERS_PATH,
    script:
        "../scripts/produce.py"
