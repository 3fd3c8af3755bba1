"""Config loading and the thin input functions the rules call; the experiment engine itself
(expansion of experiments into runs, scales, run ids, resource estimates) is fastcert.pipeline,
which tests call without Snakemake. Its ExperimentError becomes a WorkflowError here.
"""

import sys
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError

from fastcert.pipeline import resources
from fastcert.pipeline.config import check, choose_scale, load_checked, load_schema, read_yaml
from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.experiments import RUNS_DIR, expand_targets, manifest_document
from fastcert.pipeline.scales import scale_root
from fastcert.pipeline.tools import require_programs
from fastcert.records import REQUESTED_SPEC_FILE, RESULT_FILE
from fastcert.run import footprint
from fastcert.run.placement import GPU_MEMORY_ENV, SLOTS_PER_GPU_ENV, detected_gpus

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def asking(question: Any, *args: Any) -> Any:
    """The engine's answer, its ExperimentError as the WorkflowError Snakemake reports in one line."""
    try:
        return question(*args)
    except ExperimentError as error:
        raise WorkflowError(str(error)) from None


# ---------------------------------------------------------------------------------------------
# Input functions and params of the rules
# ---------------------------------------------------------------------------------------------


def run_files(target: str) -> list[str]:
    """The result file of every distinct run a target needs (sorted, no duplicates)."""
    return [f"{run_dir}/{RESULT_FILE}" for run_dir in EXPANSION.run_dirs(target)]


def target_manifest(target: str) -> dict:
    """The JSON a target's table/figure script reads (RESULTS/manifests/<target>.json)."""
    return manifest_document(EXPANSION, target, config["scale"], SCALE)


def producer_inputs(target: str) -> list[str]:
    """The producer documents (config/producers.yaml) a table or figure reads; none for most (they read runs)."""
    return [f"results/producers/{name}.json" for name, declared in PRODUCERS.items() if target in declared["for"]]


def spec_yaml(rid: str) -> str:
    """The spec file a run's job writes before training (its identity is the directory name)."""
    return yaml.safe_dump(asking(EXPANSION.run_spec, rid, config["scale"]).to_dict(), sort_keys=True)


def runtime_minutes(wildcards: Any, attempt: int) -> int:
    """Requested runtime of a training job (longer on every retry)."""
    spec = asking(EXPANSION.run_spec, wildcards.run_id, config["scale"])
    return resources.runtime_minutes(spec, SCALE, config["train"], EPOCH_TIMES, attempt)


def memory_mb(wildcards: Any) -> int:
    """Host memory of a training job."""
    return resources.memory_mb(asking(EXPANSION.run_spec, wildcards.run_id, config["scale"]), config["train"])


def limit_gpu_jobs() -> None:
    """On a workstation (no cluster executor: no ``--jobs`` nodes) and unless ``--resources gpu=N`` says
    otherwise, Snakemake starts at most GPUs x slots training jobs (each declares gpu=1): the rest wait
    for it, not for a slot lock (issue 18)."""
    if workflow.global_resources["_nodes"].value is not None or "gpu" in workflow.global_resources:
        return
    try:
        limit = resources.gpu_job_limit(config["train"], detected_gpus())
    except ValueError as error:  # a bad $FASTCERT_GPUS
        raise WorkflowError(str(error)) from None
    if limit is not None:
        workflow.global_resources["gpu"] = limit
        print(
            f"fastcert: at most {limit} training jobs at once (resource gpu={limit}: "
            f"{limit // config['train']['slots_per_gpu']} GPU(s) x {config['train']['slots_per_gpu']} slot(s))",
            file=sys.stderr,
        )


def placement_env() -> str:
    """The packing settings a training job reads (fastcert.run.placement), as shell assignments."""
    memory = config["train"]["gpu_memory_gb"]
    env = f"{SLOTS_PER_GPU_ENV}={config['train']['slots_per_gpu']}"
    return env + (f" {GPU_MEMORY_ENV}={memory}" if memory is not None else "")


def device_hours() -> dict[str, float]:
    """Estimated device-hours of every run the scale needs, by run directory (the plan's input)."""
    return {
        f"{RUNS_DIR}/{rid}": resources.estimated_seconds(spec, SCALE, config["train"], EPOCH_TIMES) / 3600
        for rid, spec in EXPANSION.runs.items()
    }


def workstation() -> dict[str, Any]:
    """The machines the plan's wall-clock columns schedule on (fastcert.pipeline.plan.Workstation)."""
    train = config["train"]
    slots = {
        f"{RUNS_DIR}/{rid}": footprint.slot_need(spec, train["gpu_memory_gb"], train["slots_per_gpu"])
        for rid, spec in EXPANSION.runs.items()
    }
    return {"gpus": tuple(train["plan_gpus"]), "slots_per_gpu": train["slots_per_gpu"], "slots": slots}


# ---------------------------------------------------------------------------------------------
# Parse-time state
# ---------------------------------------------------------------------------------------------

# Snakemake's own reader keeps the last of a key written twice in config/config.yaml or a --configfile:
# read each again strictly, so a copy-pasted key is an error naming it rather than a silent override
for config_path in workflow.configfiles:
    asking(read_yaml, config_path)
asking(check, config, load_schema(SCHEMAS / "config.schema.yaml"), "config (config/config.yaml and --config)")
limit_gpu_jobs()
EXPERIMENTS = asking(load_checked, config["experiments"], SCHEMAS / "experiments.schema.yaml")
SCALES = asking(load_checked, config["scales"], SCHEMAS / "scales.schema.yaml")
SCALE = asking(choose_scale, SCALES, config["scale"], config["scales"])
# what every scale runs, shows and costs: the reports list them (they read no configuration file)
SCALE_OVERVIEW = {name: {key: scale[key] for key in ("description", "shows", "cost")} for name, scale in SCALES.items()}
# the paper's Table 7 per-epoch times guide the runtime requests
EPOCH_TIMES = resources.epoch_time_guide(
    asking(read_yaml, config["paper_results"])["tables"]["table7"], EXPERIMENTS["levels"]
)
EXPANSION = asking(expand_targets, EXPERIMENTS, SCALE, config["scale"], config["experiments"], config["variants"])
MANIFESTS = EXPANSION.manifests
TABLES = EXPANSION.targets("table")
# Products of this scale and variants: results/, reports/ and logs/ at the paper scale with the
# default settings, results/<scale>[+<variant>...]/ ... otherwise
RESULTS = scale_root("results", config["scale"], config["variants"])
REPORTS = scale_root("reports", config["scale"], config["variants"])
LOGS = scale_root("logs", config["scale"], config["variants"])
FIGURES = EXPANSION.targets("figure")
PRODUCERS_PATH = config.get("producers", "config/producers.yaml")
PRODUCERS = asking(load_checked, PRODUCERS_PATH, SCHEMAS / "producers.schema.yaml")
