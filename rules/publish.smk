# Stage 6: the config set's page, docs/results/<PAGE>.md and its figures in docs/results/<PAGE>/
# (seqcomp.publish.pages), from the summary's tables, plots and provenance.json. A target, not
# part of `all`: docs/ is committed, so a run rewrites a page only when asked
# (`snakemake pages --configfile X`, `make pages CONFIG=X`), and then whenever its summary changed.
from seqcomp.publish.pages import SECTIONS


rule pages:
    input:
        tables=[f"{SUMMARY}/{file}" for file in SECTIONS],
        provenance=f"{SUMMARY}/provenance.json",
        plots=[f"{PAGE_DIRS['plots']}/{name}.png" for name in PLOTS],
    output:
        page=f"docs/results/{PAGE}.md",
        figures=directory(f"docs/results/{PAGE}"),  # one PNG per registered plot
    params:
        results=lambda w, input: str(Path(input.provenance).parents[2]),  # the folder holding results/<name>/
        docs=lambda w, output: os.path.dirname(output.page),
        config_files=config_file_args(),
    log:
        f"{P['logs']}/pages/{PAGE}.log",
    message:
        f"pages {PAGE}: docs/results/{PAGE}.md from {SUMMARY} [{ASKS}]"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp pages --config {params.config_files:q} --results {params.results:q}"
        " --docs {params.docs:q} --log {log:q}"
