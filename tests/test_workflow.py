"""End-to-end: the real Snakemake workflow on config/smoke.yaml in a temporary directory."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tmpfs
from seqcomp.summary import PLOTS

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
             "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default")]


def snakemake(workdir: Path, *args: str, config: Path | tuple[Path, ...] | None = None) -> subprocess.CompletedProcess:
    """Snakemake in ``workdir`` on ``config`` (a tuple: a base config and its overlays; default smoke.yaml)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    configs = config if isinstance(config, tuple) else (config or workdir / "smoke.yaml",)
    # the targets and options before --configfile, which takes every word after it
    cmd = [*SNAKEMAKE, "--directory", str(workdir), *args, "--configfile", *map(str, configs)]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)


def jobs_planned(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts, in_table = {}, False
    for line in result.stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts


@contextmanager
def edited(*sources: Path, line: str = "_EDITED_BY_A_TEST = 1") -> Iterator[None]:
    """An edit of package files (by default a real one: a new statement), undone afterwards
    (content and mtime). A comment (``line="# ..."``) is no code: it changes no stamp."""
    before = {source: (source.stat(), source.read_text()) for source in sources}
    try:
        for source, (_, text) in before.items():
            source.write_text(text + line + "\n")
        yield
    finally:
        for source, (stat, text) in before.items():
            source.write_text(text)
            os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(ROOT / "config" / "smoke.yaml", workdir / "smoke.yaml")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


def smoke_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def test_every_output_exists_with_finite_metrics(smoke_run: Path) -> None:
    cfg = smoke_config()
    r = smoke_run / "results" / "smoke"
    assert (r / "summary" / "results.md").is_file() and (r / "summary" / "results.html").is_file()
    for name in PLOTS:
        assert (r / "plots" / f"{name}.png").stat().st_size > 5_000, name
    metrics = sorted((r / "evaluate").rglob("metrics.json"))
    assert len(metrics) == len(cfg["models"]) * len(cfg["passes"])
    for path in metrics:
        m = json.loads(path.read_text())
        assert math.isfinite(m["mse"]) and math.isfinite(m["mae"]) and m["n_windows"] > 0
        assert m["latency"]["b1"]["median_ms"] > 0
        assert m["simulated"] == (m["pass_kind"] == "rtn_weight_sim")
    assert not list(r.rglob("*.tmp")), "temporary files left behind"


def test_the_page_is_generated_from_the_smoke_results(smoke_run: Path, tmp_path: Path) -> None:
    """The workflow's pages rule writes docs/results/<page>.md, and again only when its summary changes."""
    workdir = tmp_path / "run"
    shutil.copytree(smoke_run, workdir, symlinks=True)  # a copy: the summary is edited below
    result = snakemake(workdir, "pages", config=workdir / "smoke.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    docs = workdir / "docs" / "results"
    page = (docs / "smoke.md").read_text()
    assert jobs_planned(snakemake(workdir, "-n", "pages", config=workdir / "smoke.yaml")) == {}
    with (workdir / "results" / "smoke" / "summary" / "headline.md").open("a") as f:
        f.write("\n")  # a real change of the summary (Snakemake ignores a bare touch)
    assert jobs_planned(snakemake(workdir, "-n", "pages", config=workdir / "smoke.yaml")) == {"pages": 1}
    head = page.split("## Headline")[0]
    # the --configfile list as given, relative to the working directory
    assert "--configfile smoke.yaml" in head and "- commit: `" in head and "- machine: " in head
    prov = json.loads((workdir / "results" / "smoke" / "summary" / "provenance.json").read_text())
    n_jobs = len(smoke_config()["models"]) * (1 + 2 * len(smoke_config()["passes"]))
    times = prov["times"]
    assert times["jobs"] == n_jobs and 0 < times["jobs_s"] and "- wall time: " in head
    # the yardstick: every job's benchmark file, on the profile's 2 cores
    assert times["bench_files"] == n_jobs and times["bench_missing"] == 0 and times["cores"] == 2
    assert times["wall_over_bench_per_core"] == pytest.approx(times["wall_s"] / (times["bench_s"] / 2), abs=1e-3)
    assert f"(benchmark seconds / 2 cores) = **{times['wall_over_bench_per_core']:.2f}**" in head
    for name, plot in PLOTS.items():
        assert (docs / "smoke" / f"{name}.png").stat().st_size > 5_000 and f"](smoke/{name}.png)" in page
    for section in ("## Ours against published results", "## Compression passes against fp32", "## Test metrics"):
        assert section in page
    assert page.count("| lstm |") >= 2, "the tables are in the page"


def test_an_overlay_set_gets_its_own_summary_and_page(smoke_run: Path, tmp_path: Path) -> None:
    """An overlay on the same experiment (one that changes no job: only the summary runs) writes
    summary_<overlay>, plots_<overlay>, its own MLflow run and page; the base set's stay as they were."""
    workdir = tmp_path / "run"
    shutil.copytree(smoke_run, workdir, symlinks=True)  # a copy: other tests count this run's MLflow runs
    overlay = workdir / "smoke_again.yaml"
    overlay.write_text("name: smoke\n")
    r = workdir / "results" / "smoke"
    base = {p.name: p.read_bytes() for p in (r / "summary").iterdir()}
    assert jobs_planned(snakemake(workdir, "-n", config=(workdir / "smoke.yaml", overlay))) == {"summary": 1, "all": 1}
    result = snakemake(workdir, config=(workdir / "smoke.yaml", overlay))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in (r / "summary").iterdir()} == base
    prov = json.loads((r / "summary_again" / "provenance.json").read_text())
    assert prov["config_files"] == ["smoke.yaml", "smoke_again.yaml"] and (r / "logs" / "summary_again.log").is_file()
    assert all((r / "plots_again" / f"{name}.png").is_file() for name in PLOTS)
    db = sqlite3.connect(r.parent / "mlflow.db")
    summaries = dict(db.execute(
        "select r.name, t.value is not null from runs r left join tags t on t.run_uuid = r.run_uuid "
        "and t.key = 'seqcomp.superseded' where r.name like 'summary%'"))
    assert summaries == {"summary/smoke": 0, "summary/smoke_again": 0}, "one current summary run per page"
    docs = tmp_path / "docs"
    pages = [sys.executable, "-m", "seqcomp", "pages", "--results", str(r.parent), "--docs", str(docs), "--config"]
    for files in (["smoke.yaml"], ["smoke.yaml", "smoke_again.yaml"]):
        result = subprocess.run([*pages, *files], cwd=workdir, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (docs / "smoke.md").read_text().startswith("# Results: smoke\n")
    assert "--configfile smoke.yaml smoke_again.yaml" in (docs / "smoke_again.md").read_text()
    assert (docs / "smoke_again" / "pareto.png").read_bytes() == (r / "plots_again" / "pareto.png").read_bytes()


def test_mlflow_holds_the_run_tree(smoke_run: Path) -> None:
    cfg = smoke_config()
    n_models, n_passes = len(cfg["models"]), len(cfg["passes"])
    db = sqlite3.connect(smoke_run / "results" / "mlflow.db")
    runs = dict(db.execute("select run_uuid, status from runs"))
    tags = {}
    for run, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    stages = [t.get("seqcomp.stage") for t in tags.values()]
    assert stages.count("train") == n_models
    assert stages.count("compress") == stages.count("evaluate") == n_models * n_passes
    assert stages.count("summary") == 1
    assert set(runs.values()) == {"FINISHED"}
    # one run per job journal, every journal replayed by the time Snakemake returned (onsuccess)
    journal = smoke_run / "results" / "smoke" / "tracking" / "journal"
    assert sorted(t["seqcomp.journal"] for t in tags.values()) == sorted(p.stem for p in journal.rglob("*.jsonl"))
    assert not list(journal.rglob("*.files")), "files of a journal not replayed"
    for run, t in tags.items():
        parent = t.get("mlflow.parentRunId")
        expected_parent = {"train": None, "compress": "train", "evaluate": "compress", "summary": None}[t["seqcomp.stage"]]
        assert (parent and tags[parent]["seqcomp.stage"]) == expected_parent or parent is expected_parent
    params = dict(db.execute(
        "select p.key, p.value from params p join tags t on p.run_uuid = t.run_uuid "
        "where t.key = 'snakemake.wildcard.model' and t.value = 'lstm' and p.key = 'params.hidden'"
    ))
    assert params == {"params.hidden": "16"}


def test_runs_are_named_by_their_job_and_evaluations_carry_their_record(smoke_run: Path) -> None:
    db = sqlite3.connect(smoke_run / "results" / "mlflow.db")
    names = {name for (name,) in db.execute("select name from runs")}
    assert "train/tiny/lstm/L24-H8/seed0" in names
    assert "evaluate/tiny/lstm/L24-H8/seed0/int8_dynamic" in names and "summary/smoke" in names
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{smoke_run / 'results' / 'mlflow.db'}")
    (run_id,) = db.execute("select run_uuid from runs where name = 'evaluate/tiny/lstm/L24-H8/seed0/fp32'").fetchone()
    assert {"metrics.json", "forecast_examples.json"} <= {a.path for a in client.list_artifacts(run_id)}


def test_training_logs_one_line_per_epoch_and_no_noise(smoke_run: Path) -> None:
    log = (smoke_run / "results" / "smoke" / "logs" / "train" / "tiny" / "lstm" / "L24-H8" / "seed0.log").read_text()
    epochs = [line for line in log.splitlines() if " epoch " in line]
    assert len(epochs) == smoke_config()["train"]["max_epochs"], log
    assert "train/loss" in epochs[0] and "val/mse" in epochs[0] and epochs[0].endswith(" s")
    for noise in ("Tip:", "GPU available", "exists and is not empty", "Pickle", "deprecated", "srun"):
        assert noise not in log, noise


def test_the_console_names_jobs_without_their_input_lists(smoke_run: Path) -> None:
    result = snakemake(smoke_run, "-n", "--forcerun", "evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "evaluate tiny/lstm L24-H8 seed0 fp32 [threads=1 mem_mb=4000 runtime=30]" in out
    assert "input:" not in out and "src/seqcomp" not in out


def test_second_invocation_has_nothing_to_do(smoke_run: Path) -> None:
    for cores in ("2", "1"):  # nor with other cores (the summary records them, but they change no job)
        result = snakemake(smoke_run, "-n", "--cores", cores)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Nothing to be done" in result.stdout + result.stderr, cores


def test_changing_one_model_reruns_only_its_jobs(smoke_run: Path) -> None:
    cfg = smoke_config()
    cfg["models"]["lstm"]["hidden"] = 24
    changed = smoke_run / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(smoke_run, "-n", config=changed))
    n_passes = len(cfg["passes"])
    assert planned == {"train": 1, "compress": n_passes, "evaluate": n_passes, "summary": 1, "all": 1}


def test_changing_one_pass_reruns_only_that_pass(smoke_run: Path) -> None:
    cfg = smoke_config()
    cfg["passes"]["w4_rtn_sim"]["bits"] = 3
    changed = smoke_run / "changed_pass.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(smoke_run, "-n", config=changed))
    n = len(cfg["models"])
    assert planned == {"compress": n, "evaluate": n, "summary": 1, "all": 1}


def test_editing_a_model_file_reruns_only_that_model(smoke_run: Path) -> None:
    with edited(ROOT / "src" / "seqcomp" / "models" / "lstm.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    n_passes = len(smoke_config()["passes"])
    assert planned == {"train": 1, "compress": n_passes, "evaluate": n_passes, "summary": 1, "all": 1}


def test_editing_shared_compression_code_reruns_every_pass_but_no_training(smoke_run: Path) -> None:
    # quant/size.py sizes every pass's stored form (quant/uniform.py is only the grid passes' code)
    with edited(ROOT / "src" / "seqcomp" / "compress" / "quant" / "size.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    cfg = smoke_config()
    n = len(cfg["models"]) * len(cfg["passes"])
    assert planned == {"compress": n, "evaluate": n, "summary": 1, "all": 1}


def test_editing_one_pass_file_reruns_only_that_pass(smoke_run: Path) -> None:
    with edited(ROOT / "src" / "seqcomp" / "compress" / "passes" / "rtn_weight_sim.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    n = len(smoke_config()["models"])  # one pass of kind rtn_weight_sim in the smoke config
    assert planned == {"compress": n, "evaluate": n, "summary": 1, "all": 1}


PKG = ROOT / "src" / "seqcomp"


def test_a_comment_or_a_docstring_anywhere_in_the_package_reruns_nothing(smoke_run: Path) -> None:
    metrics = PKG / "evaluate" / "metrics.py"
    with edited(*sorted(PKG.rglob("*.py")), line="# a comment"):
        text = metrics.read_text()
        metrics.write_text(text.replace("forward call: the", "forward\ncall: the", 1))  # a reflowed docstring
        assert metrics.read_text() != text
        result = snakemake(smoke_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_editing_the_latency_timer_reruns_evaluations_only(smoke_run: Path) -> None:
    with edited(PKG / "evaluate" / "metrics.py"):  # training imports nothing of the evaluation stage
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    cfg = smoke_config()
    assert planned == {"evaluate": len(cfg["models"]) * len(cfg["passes"]), "summary": 1, "all": 1}


def test_editing_code_no_job_ran_reruns_nothing(smoke_run: Path) -> None:
    """GPTQ's rounding (no smoke pass uses GPTQ), the DAG's own code (jobs.py: a change that matters
    to a job shows as a changed spec, path or stamp) and a model the config does not train."""
    assert not {"gptq_weight_sim", "mixed_precision_sim"} & {p.get("kind", n) for n, p in smoke_config()["passes"].items()}
    for source in (PKG / "compress" / "quant" / "gptq.py", PKG / "jobs.py", PKG / "models" / "mamba.py"):
        with edited(source):
            result = snakemake(smoke_run, "-n")
        assert "Nothing to be done" in result.stdout + result.stderr, source


def test_adding_a_model_or_a_pass_to_its_registry_reruns_nothing(smoke_run: Path) -> None:
    """(A change of a job's own entry reruns it: tests/test_jobs.py, on a registry of its own,
    since an entry naming nothing importable stops the DAG build here.)"""
    passes, models = PKG / "compress" / "__init__.py", PKG / "models" / "__init__.py"
    fp32 = '"fp32": "seqcomp.compress.passes.fp32:Identity",'
    new_pass = fp32 + '\n        "zz_new_sim": "seqcomp.compress.passes.fp32:Identity",'
    assert fp32 in passes.read_text() and '"lstm": "seqcomp.models.lstm:' in models.read_text()
    new_model = '"lstm": "seqcomp.models.lstm:LSTMForecaster",\n    "zz_new": "seqcomp.models.lstm:'
    with edited(passes, models, line=""):
        passes.write_text(passes.read_text().replace(fp32, new_pass))
        models.write_text(models.read_text().replace('"lstm": "seqcomp.models.lstm:', new_model, 1))
        result = snakemake(smoke_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_editing_shared_model_code_reruns_the_models_that_import_it(smoke_run: Path) -> None:
    with edited(PKG / "models" / "_common.py"):  # lstm and s4d import it; the closed-form linear does not
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    n_passes = len(smoke_config()["passes"])
    assert planned == {"train": 2, "compress": 2 * n_passes, "evaluate": 2 * n_passes, "summary": 1, "all": 1}


def test_editing_the_job_shell_reruns_every_job(smoke_run: Path) -> None:
    """cli.py names and tags every job's tracking run: every job ran it."""
    with edited(PKG / "cli.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    cfg = smoke_config()
    n = len(cfg["models"]) * len(cfg["passes"])
    assert planned == {"data": 1, "train": len(cfg["models"]), "compress": n, "evaluate": n, "summary": 1, "all": 1}


def test_each_job_records_what_it_imported_and_the_static_walk_finds_at_least_that(smoke_run: Path) -> None:
    from seqcomp import jobs
    from seqcomp.config import load_config
    from seqcomp.stamps import recorded_modules as read_record

    def recorded_modules(folder: Path) -> set[str]:  # the modules; registry entries are recorded apart
        return {name for name in read_record(folder) if "[" not in name}

    cfg = load_config(smoke_config())
    r = smoke_run / "results" / "smoke"
    for model in cfg["models"]:
        job = f"tiny/{model}/L24-H8/seed0"
        train = recorded_modules(r / "train" / job)
        assert f"seqcomp.models[{cfg['models'][model]['kind']}]" in read_record(r / "train" / job)
        assert "seqcomp.cli" in train and f"seqcomp.models.{model}" in train
        assert not any(m.startswith(("seqcomp.evaluate", "seqcomp.compress")) for m in train), train
        assert train <= jobs.code_modules("train", cfg, model)
        for passname in cfg["passes"]:
            for stage in ("compress", "evaluate"):
                ran = recorded_modules(r / stage / job / passname)
                assert "seqcomp.compress.quant.gptq" not in ran and not any(m.startswith("seqcomp.train") for m in ran)
                assert ran <= jobs.code_modules(stage, cfg, model, passname=passname), (stage, model, passname)
    assert recorded_modules(r / "data" / "tiny") <= jobs.code_modules("data", cfg, dataset="tiny")
    assert recorded_modules(r / "summary") <= jobs.code_modules("summary", cfg)


def test_a_bad_config_stops_before_any_job(tmp_path: Path) -> None:
    cfg = smoke_config()
    cfg["models"]["lstm"]["hiden"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(tmp_path, "-n", config=bad)
    assert result.returncode != 0
    assert "models.lstm: unknown key(s) hiden; valid keys:" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_workflow_passes_snakemake_lint(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--lint", config=ROOT / "config" / "smoke.yaml")
    assert result.returncode == 0 and "good condition" in result.stdout + result.stderr, result.stdout[-3000:]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_serves_the_runs_on_localhost(smoke_run: Path) -> None:
    import time
    import urllib.request

    port = free_port()
    db = (smoke_run / "results" / "mlflow.db").resolve()
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=seqcomp/smoke", timeout=5) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(1)
        assert body is not None, "the MLflow UI did not answer within 120 s"
        request = urllib.request.Request(
            f"{base}/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [body["experiment"]["experiment_id"]], "max_results": 1000}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            runs = json.load(r)["runs"]
        cfg = smoke_config()
        assert len(runs) == len(cfg["models"]) * (1 + 2 * len(cfg["passes"])) + 1  # + the summary run
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI runs its server in worker processes
        ui.wait(timeout=30)


def test_building_the_dag_does_not_import_torch(smoke_run: Path) -> None:
    """A no-op run must stay cheap: validating models would import torch (seconds) every time.

    The first run memoizes the checked config (.snakemake/seqcomp/checked-configs); an unchanged config
    is not checked again. (Wall time itself is a benchmark, see docs/benchmarks.md.)
    """
    # Other tests edit package files and restore them; the first run after such a change checks
    # the config again (and memoizes it), the next one must not.
    assert snakemake(smoke_run, "-n").returncode == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-X", "importtime", *SNAKEMAKE[1:], "--directory", str(smoke_run),
           "--configfile", str(smoke_run / "smoke.yaml"), "-n"]
    result = subprocess.run(cmd, cwd=smoke_run, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "seqcomp.config" in imported and "torch" not in imported


def incomplete_jobs(workdir: Path) -> set[Path]:
    """Outputs Snakemake has marked as being written by a running job (marker names are the
    base64 of the output path)."""
    marks = workdir / ".snakemake" / "incomplete"
    files = [p for p in marks.rglob("*") if p.is_file()] if marks.is_dir() else []
    return {workdir / base64.urlsafe_b64decode(p.name).decode() for p in files}


def finished_metrics(workdir: Path) -> dict[Path, int]:
    """metrics.json files of evaluations Snakemake has recorded as done, with their mtimes."""
    written = list(workdir.glob("results/*/evaluate/**/metrics.json"))
    running = incomplete_jobs(workdir)  # read after the glob: a job is unmarked only once recorded done
    return {p: p.stat().st_mtime_ns for p in written if p not in running}


def test_a_killed_workflow_resumes_without_losing_or_duplicating_runs(tmp_path: Path) -> None:
    """SIGKILL the whole workflow (Snakemake and its jobs) mid-way, run it again: every output is
    there, finished outputs were not redone, and MLflow holds exactly one live run per job."""
    import time

    cfg = smoke_config()
    cfg["name"] = "kill"
    cfg["models"] = {"linear": {}, "lstm": {"hidden": 16}}
    cfg["passes"] = {"fp32": {}, "int8_dynamic": {}}
    cfg["seeds"] = [0, 1]
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(config), "-c", "2"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    results = tmp_path / "results" / "kill"
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            # mid-way: some evaluation finished while another job is being written
            if finished_metrics(tmp_path) and incomplete_jobs(tmp_path):
                break
            time.sleep(0.1)
        assert first.poll() is None, "the workflow ended before it could be killed mid-way"
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    done_before = finished_metrics(tmp_path)
    assert done_before and incomplete_jobs(tmp_path)

    # what the README tells a user: a killed Snakemake leaves its lock; unlock, then run again
    unlock = subprocess.run([*cmd, "--unlock"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    n_train = len(cfg["models"]) * len(cfg["seeds"])
    n_pass = n_train * len(cfg["passes"])
    assert len(list(results.rglob("metrics.json"))) == n_pass
    assert (results / "summary" / "results.csv").is_file()
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before, "finished work was redone"
    assert not list(results.rglob("*.tmp")) and not incomplete_jobs(tmp_path)

    db = sqlite3.connect(tmp_path / "results" / "mlflow.db")
    tags: dict[str, dict[str, str]] = {}
    for run, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    status = dict(db.execute("select run_uuid, status from runs"))
    live = {run: t for run, t in tags.items() if t.get("seqcomp.superseded") != "true"}
    jobs = [t["seqcomp.job"] for t in live.values()]
    assert len(jobs) == len(set(jobs)) == n_train + 2 * n_pass + 1, "a job has two live runs, or a run is missing"  # +1: summary
    assert {status[run] for run in live} == {"FINISHED"}
    assert all(status[run] != "RUNNING" for run in tags), "a killed job's run was left RUNNING"


@pytest.fixture(scope="module")
def smoke_report(smoke_run: Path) -> Path:
    """`snakemake --report` over the smoke run (it reads that run's job metadata, so it reuses it)."""
    report = smoke_run / "results" / "report.html"
    result = snakemake(smoke_run, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return report


def test_report_is_self_contained_with_every_figure_and_the_table(smoke_report: Path) -> None:
    import re

    html = smoke_report.read_text()
    for name in [*(f"{p}.png" for p in PLOTS), "results.html"]:
        assert f"filename={name};base64," in html, f"{name} is not embedded in the report"
    assert "Pareto" in html and "simulated" in html  # captions (workflow/report/*.rst) are rendered
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "the report loads external files"


def test_compare_notebook_runs_on_the_smoke_store(smoke_run: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "compare.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "commit the notebook without outputs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(smoke_run / 'results' / 'mlflow.db').resolve()}")
    monkeypatch.setenv("SEQCOMP_EXPERIMENT", "seqcomp/smoke")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in code for o in c.outputs]
    cfg = smoke_config()
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{len(cfg['models']) * len(cfg['passes'])} evaluation runs in seqcomp/smoke" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # the Pareto plot, once


def test_eight_parallel_jobs_on_the_sqlite_store_lose_no_run(tmp_path: Path) -> None:
    """`snakemake -c 8` on many small jobs, all writing to the default SQLite store: every job
    succeeds and has exactly one finished run (no "database is locked" failure)."""
    from seqcomp import jobs
    from seqcomp.config import load_config

    cfg = smoke_config()
    cfg.update(name="many", seeds=[0, 1, 2, 3], models={"naive": {}, "linear": {}}, passes={"fp32": {}})
    config = tmp_path / "many.yaml"
    config.write_text(yaml.safe_dump(cfg))
    targets = jobs.evaluation_targets(load_config(cfg))  # every train/compress/evaluate job, no summary
    result = snakemake(tmp_path, "-c", "8", *targets, config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    db = sqlite3.connect(tmp_path / "results" / "mlflow.db")
    runs = dict(db.execute("select run_uuid, status from runs"))
    stage = dict(db.execute("select run_uuid, value from tags where key = 'seqcomp.stage'"))
    job = dict(db.execute("select run_uuid, value from tags where key = 'seqcomp.job'"))
    n_train = len(cfg["seeds"]) * len(cfg["models"])
    assert sorted(stage.values()) == sorted(["train"] * n_train + ["compress", "evaluate"] * n_train)
    assert len(set(job.values())) == len(runs) and set(runs.values()) == {"FINISHED"}
    assert db.execute("select count(*) from datasets").fetchone() == (1,)  # one record, shared by the runs
    assert db.execute("select count(*) from inputs where source_type = 'DATASET'").fetchone() == (n_train,)
    configs = list((tmp_path / "results" / "mlartifacts").rglob("config.yaml"))  # one per training run
    assert len(configs) == n_train and yaml.safe_load(configs[0].read_text()) == load_config(cfg)
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "many" / "logs").rglob("*.log"))
    assert "Traceback" not in logs


def dry_run_asking_for_gpus(tmp_path: Path, profile: str) -> subprocess.CompletedProcess:
    """The smoke config with ``accelerator: auto``, dry-run under ``profile``; every training fit by SGD
    asks for a GPU, the closed-form ``linear`` for none."""
    cfg = smoke_config()
    cfg["train"]["accelerator"] = "auto"
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", str(ROOT / "workflow" / "profiles" / profile), "--configfile", str(config), "-n"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert jobs_planned(result)["train"] == len(cfg["models"])
    # each job's console line (its rule's message) shows the GPUs its training asks for
    train_lines = [line for line in result.stdout.splitlines() if ": train " in line]
    assert len(train_lines) == len(cfg["models"])
    assert all(line.endswith(" gpu=0]" if "/linear " in line else " gpu=1]") for line in train_lines), train_lines
    others = [line for line in result.stdout.splitlines() if line.startswith("Job ") and ": train " not in line]
    assert others and not any("gpu=" in line for line in others), "only training asks for a GPU"
    return result


def test_slurm_profile_resolves_and_training_asks_for_a_gpu(tmp_path: Path) -> None:
    """Dry run with the SLURM profile (snakemake-executor-plugin-slurm; no sbatch needed for -n)."""
    dry_run_asking_for_gpus(tmp_path, "slurm")


def test_gpu_profile_shares_the_gpu_between_trainings(tmp_path: Path) -> None:
    """The one-GPU machine profile: trainings ask for gpu=1 out of the profile's slots; the rest runs on the cores."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "gpu" / "config.yaml").read_text())
    slots = dict(item.split("=") for item in profile["resources"])
    assert int(slots["gpu"]) > 1 and profile["cores"] > int(slots["gpu"])
    dry_run_asking_for_gpus(tmp_path, "gpu")


def test_a_rerun_beside_an_orphaned_training_job_refuses_and_leaves_it_whole(tmp_path: Path) -> None:
    """Kill only Snakemake's main process while a training job runs (the job lives on, orphaned),
    `--unlock` and run again as docs/pipeline.md says: the rerun's training refuses, naming the
    orphan's PID, and the orphan finishes with its checkpoints, log and outputs its own. The
    orphan is paused (SIGSTOP) while the rerun starts, so a slow start-up cannot outlast it."""
    import time

    cfg = smoke_config()
    cfg["name"] = "orphan"
    cfg["models"] = {"lstm": {"hidden": 16}}
    cfg["passes"] = {"fp32": {}}
    cfg["train"].update(max_epochs=30, patience=30)
    config = tmp_path / "orphan.yaml"
    config.write_text(yaml.safe_dump(cfg))
    job = Path("results/orphan/train/tiny/lstm/L24-H8/seed0")  # the target, as the rule's output names it
    train_dir = tmp_path / job
    log = tmp_path / "results" / "orphan" / "logs" / "train" / "tiny" / "lstm" / "L24-H8" / "seed0.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(config), "-c", "1", str(job / "model.pt")]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (log.is_file() and "epoch 2/" in log.read_text()):
            assert first.poll() is None, "the workflow ended before its training could be orphaned"
            time.sleep(0.05)
        orphan = json.loads((train_dir / ".seqcomp.lock").read_text())["pid"]
        os.kill(orphan, signal.SIGSTOP)
        os.kill(first.pid, signal.SIGKILL)  # Snakemake only: its training job goes on
        first.wait(timeout=60)
        assert (train_dir / "checkpoints" / "last.ckpt").is_file()

        assert subprocess.run([*cmd, "--unlock"], cwd=tmp_path, env=env, capture_output=True, timeout=300).returncode == 0
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert f"{job}: in use by PID {orphan} on " in second.stderr, second.stderr[-3000:]
        assert f"`kill {orphan}`" in second.stderr
        assert (train_dir / "checkpoints" / "last.ckpt").is_file(), "the rerun deleted the orphan's checkpoints"
        assert "epoch 2/" in log.read_text(), "the rerun took the orphan's log"

        os.kill(orphan, signal.SIGCONT)
        deadline = time.time() + 120
        while time.time() < deadline and (train_dir / ".seqcomp.lock").exists():
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # whatever is left of the first workflow (nothing, if it passed)
    text = log.read_text()
    assert text.count("fitting lstm") == 1 and "resumed from" not in text, "a second training wrote into the log"
    epochs = [line.split(" epoch ")[1].split("/")[0] for line in text.splitlines() if " epoch " in line]
    assert epochs == [str(i) for i in range(1, 31)] and "job seconds" in text
    run = json.loads((train_dir / "run.json").read_text())
    assert run["epochs"] == 30 and run["resumed_from"] is None
    assert len((train_dir / "history.csv").read_text().splitlines()) == 31 and (train_dir / "model.pt").is_file()
    assert not (train_dir / "checkpoints").exists() and not (train_dir / ".seqcomp.log").exists()


def test_a_full_results_disk_is_said_once_without_tracebacks(tmp_path: Path) -> None:
    """The results folder on a 256 KiB tmpfs: the data job fits, training does not. The console
    says "No space left on device" naming the folder once, the store's line at most once, no
    SQLAlchemy or Python traceback; the failed jobs leave no output and are planned again."""
    shutil.copy(ROOT / "config" / "smoke.yaml", tmp_path / "smoke.yaml")
    with tmpfs(tmp_path / "results", "size=256k"):
        result = snakemake(tmp_path)
        out = result.stdout + result.stderr
        assert result.returncode != 0
        full = [line for line in out.splitlines() if "No space left on device" in line]
        assert [line for line in full if line.startswith("seqcomp: error: results/smoke: No space left on device")]
        store = [line for line in full if line.startswith("seqcomp: tracking: ")]
        workflow = [line for line in full if line.startswith("seqcomp: error: results/smoke: ")]
        own = [line for line in full if line not in store + workflow]
        # each said once: the workflow's line, the store's at most, and one per job that hit the
        # full disk (the profile's 2 cores run two trainings at once, each naming its own file)
        assert len(full) == len(set(full)) and len(workflow) == 1 and len(store) <= 1 and len(own) <= 2, full
        assert "sqlalchemy" not in out.lower() and "Traceback" not in out, out[-4000:]
        # nothing half-written: a training whose job failed left none of its outputs (one that
        # finished before the disk filled, the small closed-form fit, may keep all of them)
        trained = set()
        for folder in {p.parent for p in (tmp_path / "results" / "smoke" / "train").rglob("*") if p.is_file()}:
            kept = {p.name for p in folder.iterdir() if p.name in ("model.pt", "history.csv", "run.json")}
            assert kept in (set(), {"model.pt", "history.csv", "run.json"}), (folder, kept)
            trained |= {folder} if kept else set()
        assert not list((tmp_path / "results").rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(tmp_path / "results")], check=True)
        planned = jobs_planned(snakemake(tmp_path, "-n"))
    # the failed trainings are planned again, the finished ones and the data are not
    assert planned.get("train") == len(smoke_config()["models"]) - len(trained) > 0 and "data" not in planned


def test_a_read_only_results_folder_plans_but_does_not_run(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config" / "smoke.yaml", tmp_path / "smoke.yaml")
    with tmpfs(tmp_path / "results", "size=1m,ro"):
        dry = snakemake(tmp_path, "-n")
        assert dry.returncode == 0 and "error" not in (dry.stdout + dry.stderr).lower(), dry.stderr[-3000:]
        assert jobs_planned(dry).get("data") == 1
        real = snakemake(tmp_path)
    out = real.stdout + real.stderr
    assert real.returncode != 0
    (line,) = [line for line in out.splitlines() if "seqcomp: error" in line]
    assert line.startswith("seqcomp: error: results/smoke (to be created in results): the results folder is not "
                           f"writable: results is on a read-only file system"), line
    assert "Traceback" not in out and not re.search(r"^Job \d+:", out, re.M), out[-3000:]  # no job started


def test_a_config_file_name_with_a_space_reaches_the_summary_as_one_argument(tmp_path: Path) -> None:
    """An overlay named with a space: the summary's folders hold it, and its command quotes every
    path (a dry run prints the commands; unquoted, the log would land in a stray `summary_my`)."""
    shutil.copy(ROOT / "config" / "smoke.yaml", tmp_path / "smoke.yaml")
    overlay = tmp_path / "my overlay.yaml"
    overlay.write_text("name: smoke\n")
    result = snakemake(tmp_path, "-n", "-p", config=(tmp_path / "smoke.yaml", overlay))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "--out 'results/smoke/summary_my overlay'" in out and "--log 'results/smoke/logs/summary_my overlay.log'" in out
    assert "--config-files smoke.yaml 'my overlay.yaml'" in out


def test_a_config_file_name_with_a_brace_is_refused_before_any_job(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config" / "smoke.yaml", tmp_path / "smoke.yaml")
    overlay = tmp_path / "my{x}.yaml"
    overlay.write_text("name: smoke\n")
    result = snakemake(tmp_path, "-n", config=(tmp_path / "smoke.yaml", overlay))
    assert result.returncode != 0
    assert "my{x}.yaml': its name becomes part of the page" in result.stderr and "rename it" in result.stderr
    assert "WildcardError" not in result.stdout + result.stderr and not (tmp_path / "results" / "smoke").exists()
