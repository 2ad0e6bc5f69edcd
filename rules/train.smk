# Stage 2: train one model per (dataset, model, lookback, horizon, seed).


rule train:
    input:
        series=f"{P['data']}/series.parquet",
        meta=f"{P['data']}/meta.json",
        code=lambda w: jobs.code_stamp("train", C, P["train"].format(**w), w.model),
        pretrained=lambda w: jobs.pretrained_input(C, w.model, w.lookback),  # a transfer job's (rules/pretrain.smk)
    output:
        model=f"{P['train']}/model.pt",
        history=f"{P['train']}/history.csv",
        run=f"{P['train']}/run.json",
    params:
        spec=spec_param(jobs.train_spec, *TRAIN_KEYS),
        data=lambda w, input: os.path.dirname(input.series),
        out=lambda w, output: os.path.dirname(output.model),
        journal=P["journal"],
        config=P["config"],  # written by onstart (rules/data.smk); a record, not an input
        pretrained=lambda w, input: ["--pretrained", *input.pretrained] if input.pretrained else [],
    log:
        f"{P['logs']}/train/{JOB}.log",
    benchmark:
        f"{P['logs']}/benchmarks/train/{JOB}.tsv"  # wall, CPU and memory of the job (bench/job_costs.py)
    message:
        f"train {JOB_MESSAGE} [{ASKS} gpu={{resources.gpu}}]"
    # One core per process of the fit (train.devices: seqcomp.train.ddp), GPUs likewise. Under
    # the Slurm profile that is one task with that many CPUs and GPUs: the plugin starts the
    # command with `srun -n1`, and the command starts its other processes (docs/slurm.md).
    threads: lambda w: jobs.train_processes(C, w.model)
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: jobs.train_gpus(C, w.model),  # snakemake-executor-plugin-slurm: --gpus=<n>
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp train --spec {params.spec:q} --data {params.data:q} --out {params.out:q}"
        " --threads {threads} --config-file {params.config:q} --journal {params.journal:q} --log {log:q}"
        " {params.pretrained:q}"
