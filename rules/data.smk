# Stage 1: one prepared (split + train-scaled) parquet per dataset; the workflow's start and end (tracking).



rule data:
    input:
        source=dataset_files,
        code=lambda w: jobs.code_stamp("data", C, P["data"].format(**w), dataset=w.dataset),
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
        f"data {{wildcards.dataset}} [{ASKS}]"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/seqcomp.yaml"
    shell:
        "python -m seqcomp data --spec {params.spec:q} --out {params.out:q} --log {log:q}"


# The resolved config (defaults filled in, config files merged), logged by every training run
# so that the run can be redone from it. Written by the main process before any job, outside
# the DAG: as a declared input of training it would rerun every model on any config edit
# (mtime), and as ancient() it would hide real spec changes (Snakemake then skips the params
# check of jobs downstream of a job that reruns).
#
# Jobs write their MLflow calls to journals (results/<name>/tracking/journal); this process
# replays them into the store every ~2 s from a thread, and once more at the end, so only one
# process opens the store (docs/design.md, "Tracking"). Journals a killed workflow left are
# replayed by the next run's start, or by `python -m seqcomp track --results results/<name>`.
#
# A real run only (not -n): a results folder or store this user cannot write, or a full disk,
# stops it here with one line, before any job.
onstart:
    from seqcomp.tracking import check_writable_run, write_resolved_config
    from seqcomp.tracking.replay import start_live

    try:
        check_writable_run(jobs.results_dir(C), C["tracking_uri"])
        write_resolved_config(C, P["config"])
    except SeqcompError as exc:
        sys.exit(f"seqcomp: error: {exc}")
    start_live(P["journal"], C["tracking_uri"])


onsuccess:
    from seqcomp.tracking.replay import drain_live

    drain_live()


onerror:
    import sys

    from seqcomp.io import full_disk_note
    from seqcomp.scheduler_hints import resource_hints  # a Slurm job killed for its memory/time: what to raise
    from seqcomp.tracking.replay import drain_live

    drain_live()
    print(*resource_hints(log), sep="\n", file=sys.stderr)
    if note := full_disk_note(jobs.results_dir(C)):  # its jobs' logs, on that disk, may be empty
        print(f"seqcomp: error: {note}", file=sys.stderr)
