# Stage 5: the results table (CSV + markdown) and plots over every evaluation.


rule summarize:
    input:
        metrics=jobs.evaluation_targets(C),
        histories=jobs.history_targets(C),
        code=jobs.code_files("summarize"),
    output:
        csv=f"{P['summary']}/results.csv",
        md=f"{P['summary']}/results.md",
        pareto=f"{P['summary']}/plots/pareto.png",
        curves=f"{P['summary']}/plots/training_curves.png",
    params:
        out=lambda w, output: os.path.dirname(output.csv),
        title=C["name"],
    log:
        f"{P['logs']}/summarize.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp summarize --metrics {input.metrics} --histories {input.histories}"
        " --title {params.title:q} --out {params.out} > {log} 2>&1"
