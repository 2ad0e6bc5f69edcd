# Stage 3: one compression pass applied to one trained model.


rule compress:
    input:
        model=f"{P['train']}/model.pt",
        series=f"{P['data']}/series.parquet",  # calibration windows come from the train split
        code=lambda w: jobs.code_stamp("compress", C, P["compress"].format(**w), w.model, passname=w.passname),
    output:
        model=f"{P['compress']}/model.pt",
        report=f"{P['compress']}/report.json",
    params:
        spec=spec_param(jobs.compress_spec, *PASS_KEYS),
        data=lambda w, input: os.path.dirname(input.series),
        train_dir=lambda w, input: os.path.dirname(input.model),
        out=lambda w, output: os.path.dirname(output.model),
        journal=P["journal"],
    log:
        f"{P['logs']}/compress/{JOB}/{{passname}}.log",
    benchmark:
        f"{P['logs']}/benchmarks/compress/{JOB}/{{passname}}.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        f"compress {JOB_MESSAGE} {{wildcards.passname}} [{ASKS}]"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp compress --spec {params.spec:q} --data {params.data:q} --train-dir {params.train_dir:q}"
        " --out {params.out:q} --journal {params.journal:q} --log {log:q}"
