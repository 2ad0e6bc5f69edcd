# Stage 1: one prepared (split + train-scaled) parquet per dataset, and the MLflow experiment.



rule data:
    input:
        source=dataset_files,
        code=lambda w: jobs.code_stamp("data", C, dataset=w.dataset),
    output:
        series=f"{P['data']}/series.parquet",
        meta=f"{P['data']}/meta.json",
    params:
        spec=lambda w: canonical_json(jobs.data_spec(C, w.dataset)),
        out=lambda w, output: os.path.dirname(output.series),
    log:
        f"{P['logs']}/data/{{dataset}}.log",
    benchmark:
        f"{P['logs']}/benchmarks/data/{{dataset}}.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        "data {wildcards.dataset}"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp data --spec {params.spec:q} --out {params.out} > {log} 2>&1"


# The resolved config (defaults filled in, config files merged), logged by every training run
# so that the run can be redone from it. Written by the main process before any job, outside
# the DAG: as a declared input of training it would rerun every model on any config edit
# (mtime), and as ancient() it would hide real spec changes (Snakemake then skips the params
# check of jobs downstream of a job that reruns).
onstart:
    from seqcomp.tracking import write_resolved_config

    write_resolved_config(C, P["config"])


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
    message:
        "tracking_init: MLflow experiment {params.experiment}"
    localrule: True
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp track-init --experiment {params.experiment:q} {params.uri} --out {output} > {log} 2>&1"
