# Stage 5: the tables (results, headline, ours against published, passes against fp32) and the
# registered plots over every evaluation, logged to MLflow. Outputs wrapped in report() make up
# `snakemake --report results/report.html`; a plot's caption is workflow/report/<name>.rst where
# that file exists. The plots are seqcomp.summary.PLOTS: a new entry there is a new output here.
# One summary per config set (PAGE, PAGE_DIRS in common.smk): an overlay's has its own folders,
# log, benchmark and MLflow run (summary/<page>), so the base grid's stays as it was.
SUMMARY = PAGE_DIRS["summary"]


rule summary:
    input:
        metrics=jobs.evaluation_targets(C),
        histories=jobs.train_targets(C, "history.csv"),
        runs=jobs.train_targets(C, "run.json"),  # best validation MSE, for the lookback choice
        reports=jobs.report_targets(C),
        published=C["published"] or [],
        pretrain_runs=jobs.pretrain_targets(C, "run.json"),  # the transfer table's pre-training rows
        code=jobs.code_stamp("summary", C, SUMMARY),
    output:
        csv=f"{SUMMARY}/results.csv",
        md=f"{SUMMARY}/results.md",
        headline=f"{SUMMARY}/headline.md",
        published=f"{SUMMARY}/published.md",
        transfer=f"{SUMMARY}/transfer.md",  # empty unless a pre-trained model's transfer variants ran
        compression=f"{SUMMARY}/compression.md",
        experts=f"{SUMMARY}/experts.md",  # empty unless a compress report carries `experts` (an MoE model's)
        sweep=f"{SUMMARY}/sweep.md",  # empty unless a method is run at several sizes
        provenance=f"{SUMMARY}/provenance.json",
        html=report(
            f"{SUMMARY}/results.html", caption="../workflow/report/results.rst", category="Results table"
        ),
        **{name: plot_output(name, plot) for name, plot in PLOTS.items()},
    params:
        out=lambda w, output: os.path.dirname(output.csv),
        plots=lambda w, output: os.path.dirname(getattr(output, next(iter(PLOTS)))),
        title=C["name"],
        page=PAGE,
        benchmarks=job_benchmarks,
        # taking `resources` makes it derived, as Snakemake treats resources: no rerun for other --cores
        cores=lambda w, resources: ["--cores", CORES] if CORES else [],
        experiment=names.experiment_name(C["name"]),
        journal=P["journal"],
        published=["--published", C["published"]] if C["published"] else [],
        config_files=config_file_args(),
    log:
        f"{P['logs']}/{Path(SUMMARY).name}.log",
    benchmark:
        f"{P['logs']}/benchmarks/{Path(SUMMARY).name}.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        f"summary {PAGE} of {{params.experiment}}: tables and plots [{ASKS}]"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    # Every argument quoted: the summary's folders and --config-files come from the config file
    # names, which may hold spaces (lists are quoted item by item).
    shell:
        "python -m seqcomp summary --metrics {input.metrics:q} --histories {input.histories:q}"
        " --reports {input.reports:q} --title {params.title:q} --experiment {params.experiment:q}"
        " --journal {params.journal:q} {params.published:q} --config-files {params.config_files:q}"
        " --out {params.out:q} --plots {params.plots:q} --page {params.page:q}"
        " --benchmarks {params.benchmarks:q} {params.cores:q} --pretrain-runs {input.pretrain_runs:q} --log {log:q}"
