"""``python -m seqcomp <command>``: the entry points the Snakemake rules call.

Each command parses arguments and hands over to the stage's function; a SeqcompError (bad
config, bad data) is printed as one clear line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from seqcomp.errors import SeqcompError
from seqcomp.lock import hold_job, list_locks
# every job is named by it (its lock, its run): a module-level import, so the static import walk
# of a job that never ran (seqcomp.jobs.code_modules) finds it as the job's own record will
from seqcomp.names import experiment_name, job_key, run_name


LOG_HELP = "the job's log, opened once the job holds its output folder (seqcomp.lock)"
JOURNAL_HELP = "folder of the tracking journals (results/<name>/tracking/journal), replayed into MLflow by the workflow"


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): a job's start-up
    (interpreter, imports, opening its tracking run) is measured from there."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


_READY: list[float | None] = []  # the process's age when its stage starts working (set by _run)


def _spec(text: str) -> dict:
    return json.loads(text)


def cmd_list(args: argparse.Namespace) -> None:
    from seqcomp.compress import PASSES
    from seqcomp.data import DATASETS
    from seqcomp.models import MODELS

    for registry in (DATASETS, MODELS, PASSES):
        print(f"{registry.plural}: {', '.join(registry.names())}")


def cmd_validate(args: argparse.Namespace) -> None:
    from seqcomp.config import load_config
    from seqcomp.jobs import grid

    cfg = load_config(args.config)  # several files merge as Snakemake's --configfile list does
    print(f"{' '.join(args.config)}: valid; {len(grid(cfg))} evaluations in experiment {experiment_name(cfg['name'])}")


def cmd_data(args: argparse.Namespace) -> None:
    from seqcomp.data.stage import run_data

    spec = _spec(args.spec)
    name = spec.pop("dataset")
    meta = run_data(spec, args.out, name=name)
    if meta.get("task") == "classification":
        print(f"prepared {name}: samples {meta['counts']} of {meta['length']} tokens, {meta['targets']} targets each")
        return
    print(f"prepared {name}: {meta['n_rows']} rows, channels {meta['channels']}, borders {meta['borders']}")


def cmd_track(args: argparse.Namespace) -> None:
    from seqcomp.io import check_writable
    from seqcomp.tracking import check_writable_store, redact, resolve_uri
    from seqcomp.tracking.replay import Replayer

    results = Path(args.results)
    journal_dir = results / "tracking" / "journal"
    if not journal_dir.is_dir():
        raise SeqcompError(f"{journal_dir}: no journals (is --results a workflow's results/<name> folder?)")
    config_uri = args.tracking_uri or config_tracking_uri(results / "tracking" / "config.yaml")
    check_writable(journal_dir, "the journals' folder")  # the replay's lock and progress files go there
    check_writable_store(config_uri)
    uri = resolve_uri(config_uri)
    problems = Replayer(journal_dir, uri).replay(final=True)
    for line in problems:
        print(f"seqcomp: not replayed: {line}", file=sys.stderr)
    if problems:
        raise SeqcompError(f"{len(problems)} journal(s) not replayed into {redact(uri)}")
    print(f"{journal_dir}: replayed into {redact(uri)}")


def config_tracking_uri(resolved_config: Path) -> str | None:
    """The ``tracking_uri`` of the workflow's resolved config (written by its ``onstart``), if any."""
    import yaml

    return yaml.safe_load(resolved_config.read_text()).get("tracking_uri") if resolved_config.is_file() else None


def _run(args: argparse.Namespace, stage: str, spec: dict, parent: str | None = None):  # noqa: ANN202
    """The job's run (a journal under ``--journal``); ``parent``: the parent stage, whose job key
    comes from the same spec."""
    from seqcomp.tracking import Run, snakemake_tags

    wildcards = {k: spec[k] for k in ("dataset", "model", "lookback", "horizon", "seed", "pass") if k in spec}
    # Tagged with Snakemake's own names (the rule is the stage; ``pass`` is the ``passname`` wildcard).
    tags = {"seqcomp.stage": stage, **snakemake_tags(stage, {"passname" if k == "pass" else k: v
                                                             for k, v in wildcards.items()})}
    run = Run.start(args.journal, spec["experiment"], run_name(stage, spec), job_key(stage, spec), tags,
                    parent=job_key(parent, spec) if parent else None)
    _READY.append(process_age())
    return run


def cmd_train(args: argparse.Namespace) -> None:
    from seqcomp.train.stage import run_train

    spec = _spec(args.spec)
    run = _run(args, "train", spec)
    config = args.config_file
    if config and not Path(config).is_file():  # the workflow writes it on start; not with --no-hooks
        print(f"seqcomp: warning: {config} not found; the run will not hold the resolved config", file=sys.stderr)
        config = None
    summary = run_train(spec, Path(args.data), Path(args.out), run, threads=args.threads, config_file=config,
                        pretrained=args.pretrained)
    print(json.dumps(summary, indent=2))


def cmd_pretrain(args: argparse.Namespace) -> None:
    from seqcomp.train.pretrain import run_pretrain

    spec = _spec(args.spec)
    run = _run(args, "pretrain", spec)
    summary = run_pretrain(spec, args.data, Path(args.out), run, threads=args.threads)
    print(json.dumps(summary, indent=2))


def cmd_compress(args: argparse.Namespace) -> None:
    from seqcomp.compress.stage import run_compress

    spec = _spec(args.spec)
    run = _run(args, "compress", spec, parent="train")
    report = run_compress(spec, Path(args.train_dir) / "model.pt", Path(args.data), Path(args.out), run)
    print(f"{spec['pass']}: {report['size']['bytes']} bytes stored, {report['fp32_bytes']} bytes in fp32")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from seqcomp.evaluate.stage import run_evaluate

    spec = _spec(args.spec)
    run = _run(args, "evaluate", spec, parent="compress")
    metrics = run_evaluate(
        spec, Path(args.train_dir) / "model.pt", Path(args.compressed), Path(args.data), Path(args.out), run
    )
    from seqcomp.scores import HEADLINE

    scores = " ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE[metrics["task"]])
    unit = "samples" if "n_samples" in metrics else "windows"
    print(f"test {scores} over {metrics['n_' + unit]} {unit}")


def cmd_summary(args: argparse.Namespace) -> None:
    from seqcomp.summary.stage import run_summary
    from seqcomp.tracking import Run, snakemake_tags

    tags = {"seqcomp.stage": "summary", **snakemake_tags("summary", {})}
    # one run (and job key) per page, so that a config set's summary never supersedes another's
    page = {"page": args.page}
    run = Run.start(args.journal, args.experiment, run_name("summary", page), job_key("summary", page), tags)
    run_summary(args.metrics, args.histories, args.reports, Path(args.out), Path(args.plots), args.title, run,
                published=Path(args.published) if args.published else None, config_files=args.config_files,
                benchmarks=args.benchmarks, cores=args.cores, pretrain_runs=args.pretrain_runs)


def cmd_ui_links(args: argparse.Namespace) -> None:
    from seqcomp.tracking.ui import experiment_links

    links = experiment_links(args.store, args.url)
    print("\n".join(links) if links else f"{args.store}: no experiments yet (run the workflow first)")


def cmd_locks(args: argparse.Namespace) -> None:
    if not Path(args.results).is_dir():
        raise SeqcompError(f"{args.results}: no such folder (--results is a workflow's results/<name> folder)")
    lines = list_locks(args.results)
    print("\n".join(lines) if lines else f"{args.results}: no job holds a folder")


def job_of(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(output folder, job name) of a job command, for its lock; None for the other commands."""

    if args.command == "summary":
        return Path(args.out), run_name("summary", {"page": args.page})
    if args.command == "data":
        return Path(args.out), run_name("data", _spec(args.spec))
    if args.command in ("pretrain", "train", "compress", "evaluate"):
        out = Path(args.out)  # evaluate's --out is its metrics.json
        return (out.parent if args.command == "evaluate" else out), run_name(args.command, _spec(args.spec))
    return None


def cmd_pages(args: argparse.Namespace) -> None:
    from seqcomp.lock import redirect_output
    from seqcomp.publish.pages import config_name, write_bench_page, write_index, write_page

    if args.log:  # the workflow's pages rule: a page is written whole (atomically), so a rerun may start the log afresh
        redirect_output(Path(args.log))
    if args.bench:
        print(f"wrote {write_bench_page(Path(args.bench_results), Path(args.docs), Path.cwd())}")
    if args.config:
        name = config_name(args.config)
        print(f"wrote {write_page(Path(args.results) / name, Path(args.docs), args.config)}")
    if args.index:
        print(f"wrote {write_index(Path(args.docs), Path(args.index_out))}")
    if not (args.bench or args.config or args.index):
        raise SeqcompError("pages: name --config (a pipeline's page), --bench (the micro-benchmarks' page) "
                           "or --index (docs/benchmarks.md)")


def cmd_bench(args: argparse.Namespace) -> None:
    from seqcomp.publish.bench import run_group

    skipped = run_group(args.group)
    print(f"bench --group {args.group}: done" + (f"; skipped {', '.join(skipped)}" if skipped else ""))


def _say(line: str) -> None:
    """Print the job's error line to stderr (its log), which may be on the full disk itself."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def written_path(exc: BaseException) -> str | None:
    """The file ``exc`` or an error it was raised from was writing: an OSError's ``filename2``
    (the target of a copy or move: Lightning moves checkpoints from /tmp), else its ``filename``."""
    from seqcomp.io import causes

    names = (getattr(e, "filename2", None) or getattr(e, "filename", None) for e in causes(exc))
    return next((name for name in names if name), None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqcomp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered dataset kinds, models and passes").set_defaults(fn=cmd_list)
    p = sub.add_parser("validate", help="check a config file (or a base config and its overlays) as the workflow would")
    p.add_argument("config", nargs="+")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("data", help="data stage: split + scale one dataset into parquet + meta.json")
    p.add_argument("--spec", required=True, help="JSON of the dataset entry plus its name")
    p.add_argument("--out", required=True)
    p.add_argument("--log", default=None, help=LOG_HELP)
    p.set_defaults(fn=cmd_data)
    p = sub.add_parser("track", help="replay a workflow's tracking journals into MLflow (what its run did not)")
    p.add_argument("--results", required=True, help="the workflow's results/<name> folder")
    p.add_argument("--tracking-uri", default=None,
                   help="default: $MLFLOW_TRACKING_URI, else the config's tracking_uri, else sqlite:///results/mlflow.db")
    p.set_defaults(fn=cmd_track)
    for name, fn in (("train", cmd_train), ("compress", cmd_compress), ("evaluate", cmd_evaluate)):
        p = sub.add_parser(name, help=f"{name} stage of one job")
        p.add_argument("--spec", required=True, help="JSON job spec (built by seqcomp.jobs)")
        p.add_argument("--data", required=True, help="prepared dataset folder")
        p.add_argument("--journal", required=True, help=JOURNAL_HELP)
        p.add_argument("--threads", type=int, default=1)
        if name != "train":
            p.add_argument("--train-dir", required=True)
        if name == "evaluate":
            p.add_argument("--compressed", required=True)
        if name == "train":
            p.add_argument("--config-file", default=None, help="resolved config, logged as an artifact")
            p.add_argument("--pretrained", default=None, help="a transfer job's pre-trained model.pt (seqcomp.train.transfer)")
        p.add_argument("--out", required=True)
        p.add_argument("--log", default=None, help=LOG_HELP)
        p.set_defaults(fn=fn)
    p = sub.add_parser("pretrain", help="pre-train one model on a corpus of prepared datasets (seqcomp.train.pretrain)")
    p.add_argument("--spec", required=True, help="JSON job spec (built by seqcomp.jobs.pretrain_spec)")
    p.add_argument("--data", nargs="+", required=True, help="the corpus datasets' prepared folders")
    p.add_argument("--journal", required=True, help=JOURNAL_HELP)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--log", default=None, help=LOG_HELP)
    p.set_defaults(fn=cmd_pretrain)
    p = sub.add_parser("summary", help="results table and plots from metrics.json files")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--histories", nargs="*", default=[])
    p.add_argument("--reports", nargs="*", default=[], help="compress report.json files (per-layer sensitivity)")
    p.add_argument("--title", default="seqcomp")
    p.add_argument("--experiment", required=True, help="MLflow experiment of the summary run")
    p.add_argument("--journal", required=True, help=JOURNAL_HELP)
    p.add_argument("--out", required=True, help="folder of results.csv / .md / .html")
    p.add_argument("--plots", required=True, help="folder of the plots")
    p.add_argument("--published", default=None, help="published-results file to compare with (config key published)")
    p.add_argument("--config-files", nargs="*", default=[], help="the run's --configfile list, for the pages")
    p.add_argument("--page", required=True, help="the config set's page (seqcomp.publish.pages.page_name): its MLflow run")
    p.add_argument("--benchmarks", nargs="*", default=[],
                   help="Snakemake benchmark files of the jobs behind --metrics (a missing one is counted as missing)")
    p.add_argument("--cores", type=int, default=None, help="the cores Snakemake ran the jobs with")
    p.add_argument("--pretrain-runs", nargs="*", default=[],
                   help="pre-training jobs' run.json files (results/<name>/pretrain/<model>/L<context>/run.json)")
    p.add_argument("--log", default=None, help=LOG_HELP)
    p.set_defaults(fn=cmd_summary)
    p = sub.add_parser("locks", help="the job locks under a results folder: live jobs (held) and stale lock files")
    p.add_argument("--results", required=True, help="the workflow's results/<name> folder")
    p.set_defaults(fn=cmd_locks)
    p = sub.add_parser("ui-links", help="each experiment's link to its training runs in the MLflow UI (make ui)")
    p.add_argument("--store", default="results/mlflow.db", help="the MLflow SQLite database")
    p.add_argument("--url", default="http://127.0.0.1:5000", help="where the MLflow UI listens")
    p.set_defaults(fn=cmd_ui_links)
    p = sub.add_parser("pages", help="docs/results/<page>.md + figures from results/<name>/ (a page per config set)")
    p.add_argument("--config", nargs="+", help="the workflow's --configfile list (names the results)")
    p.add_argument("--bench", action="store_true", help="docs/results/microbench.md from --bench-results")
    p.add_argument("--bench-results", default="bench/results", help="folder of the micro-benchmarks' JSON files")
    p.add_argument("--results", default="results", help="folder holding results/<name>/")
    p.add_argument("--docs", default="docs/results", help="folder of the generated pages")
    p.add_argument("--index", action="store_true", help="--index-out (the index of the pages) from the pages in --docs")
    p.add_argument("--index-out", default="docs/benchmarks.md", help="where the index goes")
    p.add_argument("--log", default=None, help="write standard output and error here (the workflow's pages rule)")
    p.set_defaults(fn=cmd_pages)
    p = sub.add_parser("bench", help="run a group of the registered micro-benchmarks (seqcomp.publish.bench.BENCHES)")
    p.add_argument("--group", required=True, help="cpu (make bench), gpu (make bench-gpu) or extra (make bench-extra)")
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()  # a crash in native code (torch, sqlite) still leaves a traceback in the job log
    # Progress lines (one per training epoch) go to stderr, i.e. the job's log, with a time stamp.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("seqcomp").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    job = job_of(args)
    try:  # refused (another process holds the job's folder): one line on the console, the holder's log kept
        lock = hold_job(*job, log=args.log) if job else contextlib.nullcontext()
        with lock:
            return run_command(args)
    except SeqcompError as exc:
        _say(f"seqcomp: error: {exc}")
        return 2
    except OSError as exc:  # the lock file or the log on a full disk
        from seqcomp.io import DiskFull, disk_full

        if not disk_full(exc):
            raise
        _say(f"seqcomp: error: {DiskFull(written_path(exc) or getattr(args, 'out', None) or Path.cwd())}")
        return 2


def record_modules(args: argparse.Namespace) -> None:
    """The package modules a job loaded, recorded in its output folder as it ends: its code
    stamp in the next DAG build (seqcomp.stamps; the recorder leaves itself out)."""
    if (job := job_of(args)) is not None:
        from seqcomp.stamps import record_job

        record_job(job[0], started=time.time() - (process_age() or 0.0))


def run_command(args: argparse.Namespace) -> int:
    """The command's exit status; its last words (an error, the job's seconds) written while
    the job still holds its folder, so a next start never finds them in its fresh log."""
    try:
        args.fn(args)
        record_modules(args)
    except SeqcompError as exc:
        _say(f"seqcomp: error: {exc}")
        return 2
    except Exception as exc:
        from seqcomp.io import DiskFull, disk_full

        if not disk_full(exc):  # a bug: its traceback, as Python would print it on exit
            traceback.print_exc()
            return 1
        # a writer that does not go through seqcomp.io (Lightning's checkpoints): its file, else the job's output
        _say(f"seqcomp: error: {DiskFull(written_path(exc) or getattr(args, 'out', None) or Path.cwd())}")
        return 2
    if _READY and _READY[0] is not None and (total := process_age()) is not None:
        # one parseable line per job: bench/job_costs.py adds them up over a workflow
        logging.getLogger("seqcomp").info("job seconds: start-up %.2f (interpreter, imports, tracking run), work %.2f",
                                          _READY[0], total - _READY[0])
    return 0
