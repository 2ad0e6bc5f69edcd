# Stage 4: test metrics, size and CPU latency of one compressed model.


rule evaluate:
    input:
        train=f"{P['train']}/model.pt",
        compressed=f"{P['compress']}/model.pt",
        report=f"{P['compress']}/report.json",
        series=f"{P['data']}/series.parquet",
        code=lambda w: jobs.code_stamp("evaluate", C, os.path.dirname(P["evaluate"].format(**w)), w.model, passname=w.passname),
    output:
        P["evaluate"],
    params:
        spec=spec_param(jobs.evaluate_spec, *PASS_KEYS),
        data=lambda w, input: os.path.dirname(input.series),
        train_dir=lambda w, input: os.path.dirname(input.train),
        compressed=lambda w, input: os.path.dirname(input.compressed),
        journal=P["journal"],
    log:
        f"{P['logs']}/evaluate/{JOB}/{{passname}}.log",
    benchmark:
        f"{P['logs']}/benchmarks/evaluate/{JOB}/{{passname}}.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        f"evaluate {JOB_MESSAGE} {{wildcards.passname}} [{ASKS}]"
    threads: 1  # latency is timed with evaluate.latency_threads; one job per core keeps timings clean
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp evaluate --spec {params.spec:q} --data {params.data:q} --train-dir {params.train_dir:q}"
        " --compressed {params.compressed:q} --out {output:q} --journal {params.journal:q} --log {log:q}"
