# Stage 5: the results table (CSV, markdown, HTML) and plots over every evaluation, logged to MLflow.
# Outputs wrapped in report() make up `snakemake --report results/report.html`; their captions
# are workflow/report/<name>.rst. Plot names match seqcomp.summary.PLOTS.

TRADE_OFFS = "Compression trade-offs"
QUALITY = "Forecast quality"


rule summary:
    input:
        metrics=jobs.evaluation_targets(C),
        histories=jobs.train_targets(C, "history.csv"),
        runs=jobs.train_targets(C, "run.json"),  # best validation MSE, for the lookback choice
        reports=jobs.report_targets(C),
        code=jobs.code_stamp("summary"),
    output:
        csv=f"{P['summary']}/results.csv",
        md=f"{P['summary']}/results.md",
        headline=f"{P['summary']}/headline.md",
        html=report(
            f"{P['summary']}/results.html", caption="../workflow/report/results.rst", category="Results table"
        ),
        pareto=report(
            f"{P['plots']}/pareto.png", caption="../workflow/report/pareto.rst", category=TRADE_OFFS
        ),
        bits=report(
            f"{P['plots']}/error_vs_bits.png", caption="../workflow/report/error_vs_bits.rst", category=TRADE_OFFS
        ),
        latency=report(
            f"{P['plots']}/latency.png", caption="../workflow/report/latency.rst", category=TRADE_OFFS
        ),
        sensitivity=report(
            f"{P['plots']}/sensitivity.png", caption="../workflow/report/sensitivity.rst", category=TRADE_OFFS
        ),
        steps=report(
            f"{P['plots']}/error_per_step.png", caption="../workflow/report/error_per_step.rst", category=QUALITY
        ),
        forecasts=report(
            f"{P['plots']}/forecasts.png", caption="../workflow/report/forecasts.rst", category=QUALITY
        ),
        curves=report(
            f"{P['plots']}/training_curves.png", caption="../workflow/report/training_curves.rst", category=QUALITY
        ),
    params:
        out=lambda w, output: os.path.dirname(output.csv),
        plots=lambda w, output: os.path.dirname(output.pareto),
        title=C["name"],
        experiment=f"seqcomp/{C['name']}",
        journal=P["journal"],
    log:
        f"{P['logs']}/summary.log",
    benchmark:
        f"{P['logs']}/benchmarks/summary.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        "summary of {params.experiment}: tables and plots"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp summary --metrics {input.metrics} --histories {input.histories}"
        " --reports {input.reports} --title {params.title:q} --experiment {params.experiment:q} --journal {params.journal}"
        " --out {params.out} --plots {params.plots} > {log} 2>&1"
