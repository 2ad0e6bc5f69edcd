# Config validation and the input/param functions every rule uses.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from seqcomp.config import canonical_json
from seqcomp.errors import SeqcompError
from seqcomp.io import DiskFull
from seqcomp import names
from seqcomp.publish.pages import page_folder, page_name
from seqcomp.summary import PLOTS

# The --configfile files are read again here (seqcomp.config_files): Snakemake's loader expands
# YAML aliases without a bound and keeps the last of two equal keys, and a refused key is named
# with its file and line. (A mapping alias bomb costs Snakemake's own merge time before this
# runs; `make run` validates first.)
try:
    C = load_config(config, memo_dir=f"{jobs.CACHE_DIR}/checked-configs", files=workflow.configfiles)
except DiskFull as exc:  # writing the memo
    sys.exit(f"seqcomp: error: {exc}")
except SeqcompError as exc:
    sys.exit(f"seqcomp: invalid config: {exc}")

P = jobs.paths(C)
JOB = names.JOB_PATH
# What the console says of a job: the job and what it asks the machine or scheduler for (a
# rule's `message:` replaces Snakemake's listing of its inputs, mostly package code stamps);
# spelled for reading, with spaces, never parsed back.
JOB_MESSAGE = "{wildcards.dataset}/{wildcards.model} L{wildcards.lookback}-H{wildcards.horizon} seed{wildcards.seed}"
ASKS = "threads={threads} mem_mb={resources.mem_mb} runtime={resources.runtime}"
# Every job gets `--log {log}` rather than `> {log} 2>&1`: it opens its log only once it holds its
# output folder, so a second start of a job that still runs cannot wipe its log (seqcomp.lock).


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_]*",
    model="[A-Za-z0-9][A-Za-z0-9_]*",
    passname="[A-Za-z0-9][A-Za-z0-9_]*",
    lookback=r"\d+",
    horizon=r"\d+",
    seed=r"\d+",


def spec_param(builder, *keys):
    """A params function: the job's spec as canonical JSON (the rerun trigger and the CLI argument)."""
    return lambda w: canonical_json(builder(C, *(w[k] for k in keys)))


TRAIN_KEYS = names.JOB_FIELDS
PASS_KEYS = TRAIN_KEYS + ("passname",)


def dataset_files(w):
    """A csv dataset's file is an input, so replacing the file reruns everything downstream."""
    entry = C["datasets"][w.dataset]
    return [entry["path"]] if entry["kind"] == "csv" else []


def plot_output(name, plot):
    caption = f"workflow/report/{name}.rst"  # relative to the project, not the working directory
    return report(f"{PAGE_DIRS['plots']}/{name}.png", category=plot.category,
                  caption=f"../{caption}" if Path(workflow.basedir, caption).is_file() else None)


def job_benchmarks(wildcards, input):
    """Benchmark files of the train/compress/evaluate jobs behind the summary rule's metrics, for the
    page's yardstick. A param, not an input: a job run before benchmarks existed has none, and
    must not rerun for it (the summary counts it as missing). Taking ``input`` marks it derived
    from the inputs (the same grid), so Snakemake does not store the long list as a rerun trigger."""
    pattern = {stage: str(getattr(rules, stage).benchmark) for stage in ("train", "compress", "evaluate")}
    return sorted({p.format(**point) for p in pattern.values() for point in jobs.grid(C)})


def config_file_args():
    """The --configfile list as given (relative to the working directory where possible), for the pages."""
    files = [Path(f) for f in workflow.overwrite_configfiles] or [Path("config/config.yaml")]
    return [str(f.relative_to(Path.cwd()) if f.is_absolute() and f.is_relative_to(Path.cwd()) else f) for f in files]


# The cores Snakemake runs jobs on, for the page's yardstick (seqcomp.publish.timing); None
# on a cluster (the jobs run on many nodes, and a job step's own Snakemake has a node's cores)
# or where Snakemake has no core count.
try:
    CORES = workflow.cores if workflow.local_exec and not workflow.remote_exec else None
except WorkflowError:
    CORES = None

# One page per config set (seqcomp.publish.pages): the base config's summary and plots go to P's folders,
# an overlay set's to <folder>_<overlays> (results/etth1/summary_compress), so they never clobber.
# An overlay's file name becomes a folder: one with a brace or quote is refused here, before any job.
# (Every other path in a shell command is built from schema-checked names: letters, digits, _ . -.)
try:
    PAGE = page_name(config_file_args(), C["name"])
except SeqcompError as exc:
    sys.exit(f"seqcomp: invalid config: {exc}")
PAGE_DIRS = {k: page_folder(P[k], config_file_args(), C["name"]) for k in ("summary", "plots")}
