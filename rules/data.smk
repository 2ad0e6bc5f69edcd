# Stage 1: one prepared (split + train-scaled) parquet per dataset, and the MLflow experiment.



rule prepare_data:
    input:
        source=dataset_files,
        code=jobs.code_files("data"),
    output:
        series=f"{P['data']}/series.parquet",
        meta=f"{P['data']}/meta.json",
    params:
        spec=lambda w: canonical_json(jobs.data_spec(C, w.dataset)),
        out=lambda w, output: os.path.dirname(output.series),
    log:
        f"{P['logs']}/data/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp prepare --spec {params.spec:q} --out {params.out} > {log} 2>&1"


rule tracking_init:
    # Creates the MLflow experiment (and the SQLite schema) once, before jobs fan out:
    # concurrent first-time creation races (PITFALLS.md section 4).
    output:
        P["tracking"],
    params:
        experiment=f"seqcomp/{C['name']}",
        uri=TRACKING_ARG,
    log:
        f"{P['logs']}/tracking_init.log",
    localrule: True
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp track-init --experiment {params.experiment:q} {params.uri} --out {output} > {log} 2>&1"
