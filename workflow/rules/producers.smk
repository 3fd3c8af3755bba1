# Producers (config/producers.yaml): numbers a table or figure shows that need no data and no
# training, computed once per workflow (identical at every scale) into results/producers/<name>.json.
# The table and figure rules read them through producer_inputs().

PRODUCERS_PATH = config.get("producers", "config/producers.yaml")
PRODUCERS = load_checked(PRODUCERS_PATH, "producers.schema.yaml")


def producer_inputs(target: str) -> list[str]:
    """The producer documents a table or figure reads (none for most: they read runs)."""
    return [f"results/producers/{name}.json" for name, declared in PRODUCERS.items() if target in declared["for"]]


wildcard_constraints:
    producer="|".join(PRODUCERS),


rule produce:
    output:
        "results/producers/{producer}.json",
    log:
        "logs/producers/{producer}.log",
    params:
        declaration=lambda wildcards: PRODUCERS[wildcards.producer],
        where=PRODUCERS_PATH,
    threads: 1
    script:
        "../scripts/produce.py"
