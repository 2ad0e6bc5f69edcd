# Stage 2a: pre-train one model per (pre-trained model, context) on the corpus (config `pretrain:`,
# docs/pretrain.md); its model.pt is an input of that model's transfer jobs on every target.


rule pretrain:
    input:
        series=jobs.corpus_targets(C, "series.parquet"),
        code=lambda w: jobs.code_stamp("pretrain", C, P["pretrain"].format(**w), w.model),
    output:
        model=f"{P['pretrain']}/model.pt",
        history=f"{P['pretrain']}/history.csv",
        run=f"{P['pretrain']}/run.json",
    params:
        spec=lambda w: canonical_json(jobs.pretrain_spec(C, w.model, w.lookback)),
        data=lambda w, input: [os.path.dirname(s) for s in input.series],
        out=lambda w, output: os.path.dirname(output.model),
        journal=P["journal"],
    log:
        f"{P['logs']}/pretrain/{{model}}/L{{lookback}}.log",
    benchmark:
        f"{P['logs']}/benchmarks/pretrain/{{model}}/L{{lookback}}.tsv"
    message:
        f"pretrain {{wildcards.model}} context {{wildcards.lookback}} on the corpus [{ASKS} gpu={{resources.gpu}}]"
    threads: lambda w: jobs.train_processes(C, w.model, pretrain=True)  # pretrain.train.devices (seqcomp.train.ddp)
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: jobs.train_gpus(C, w.model, pretrain=True),
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp pretrain --spec {params.spec:q} --data {params.data:q} --out {params.out:q}"
        " --threads {threads} --journal {params.journal:q} --log {log:q}"
