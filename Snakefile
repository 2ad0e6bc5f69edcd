# seqcomp: data -> train -> compress -> evaluate -> summary -> pages (docs/pipeline.md explains the targets).
# The config is validated when the DAG is built: a wrong key fails here, naming the key.
from seqcomp.config import load_config
from seqcomp import jobs

# `--configfile X` runs exactly X; without one, the offline default config.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/compress.smk"
include: "rules/evaluate.smk"
include: "rules/summary.smk"
include: "rules/publish.smk"


rule all:
    default_target: True
    message:
        "all: the summary table and plots are up to date"
    input:
        f"{PAGE_DIRS['summary']}/results.md",
        f"{PAGE_DIRS['plots']}/pareto.png",
