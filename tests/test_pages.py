"""Generated pages: one per config set, each from its own summary folders, headed by the yardstick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqcomp.errors import SeqcompError
from seqcomp.publish.pages import SECTIONS, page_folder, page_header, page_name, write_page
from seqcomp.summary import PLOTS

BASE = ["config/etth1.yaml"]
COMPRESS = [*BASE, "config/etth1_compress.yaml"]


@pytest.mark.parametrize(("files", "page"), [
    (BASE, "etth1"),
    (COMPRESS, "etth1_compress"),
    ([*BASE, "config/etth1_long.yaml", "config/etth1_compress.yaml"], "etth1_long+compress"),
    ([*BASE, "elsewhere/more_passes.yaml"], "etth1_more_passes"),  # no etth1_ prefix: the whole stem
])
def test_page_name_is_the_name_and_the_overlays(files: list[str], page: str) -> None:
    assert page_name(files, "etth1") == page


def test_page_name_reads_the_name_from_the_files(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: etth1\n")
    (tmp_path / "etth1_compress.yaml").write_text("horizons: [96]\n")
    assert page_name([str(tmp_path / "base.yaml"), str(tmp_path / "etth1_compress.yaml")]) == "etth1_compress"


def test_the_base_set_keeps_its_folders_and_an_overlay_set_gets_its_own() -> None:
    assert page_folder("results/etth1/summary", BASE, "etth1") == "results/etth1/summary"
    assert page_folder("results/etth1/plots", COMPRESS, "etth1") == "results/etth1/plots_compress"


def fake_summary(results: Path, files: list[str], marker: str) -> None:
    """What the summary rule writes for the config set ``files``: tables (``marker`` in each),
    provenance.json and a stand-in file per plot."""
    summary, plots = (Path(page_folder(results / base, files, results.name)) for base in ("summary", "plots"))
    summary.mkdir(parents=True)
    plots.mkdir(parents=True)
    for name in SECTIONS:
        (summary / name).write_text(f"# {results.name}: {name}\n\n{marker}\n")
    (summary / "provenance.json").write_text(json.dumps(provenance(files)))
    for name in PLOTS:
        (plots / f"{name}.png").write_bytes(marker.encode())


def provenance(files: list[str], **times: object) -> dict:
    return {
        "config_files": files, "commit": "abc", "dirty": "False", "written": "2026-12-06 07:00:00 UTC",
        "machine": {"cpu": "cpu", "cores": 2, "gpus": [], "os": "linux"},
        "times": {"source": "tracking journals", "jobs": 4, "first_start": "t0", "last_end": "t1", "wall_s": 300.0,
                  "jobs_s": 400.0, "commits": ["abc"], "bench_s": 500.0, "bench_files": 4, "bench_missing": 0,
                  "cores": 2, "wall_over_bench_per_core": 1.2, **times},
    }


def test_an_overlay_page_leaves_the_base_page_alone(tmp_path: Path) -> None:
    results, docs = tmp_path / "results" / "etth1", tmp_path / "docs"
    fake_summary(results, BASE, "BASE TABLES")
    fake_summary(results, COMPRESS, "OVERLAY TABLES")
    base = write_page(results, docs, BASE)
    before = base.read_text()
    overlay = write_page(results, docs, COMPRESS)
    assert overlay == docs / "etth1_compress.md" and base.read_text() == before
    assert "BASE TABLES" in before and "OVERLAY TABLES" not in before
    text = overlay.read_text()
    assert "OVERLAY TABLES" in text and "BASE TABLES" not in text
    assert text.startswith("# Results: etth1_compress") and "`results/etth1/summary_compress/`" in text
    assert "--configfile config/etth1.yaml config/etth1_compress.yaml" in text
    assert "](etth1_compress/pareto.png)" in text
    assert (docs / "etth1_compress" / "pareto.png").read_bytes() == b"OVERLAY TABLES"
    assert (docs / "etth1" / "pareto.png").read_bytes() == b"BASE TABLES"


def test_a_summary_of_another_config_set_is_refused(tmp_path: Path) -> None:
    """A summary folder written before pages were per set may hold an overlay's tables."""
    results = tmp_path / "results" / "etth1"
    fake_summary(results, BASE, "x")
    (results / "summary" / "provenance.json").write_text(json.dumps(provenance(COMPRESS)))
    with pytest.raises(SeqcompError, match="page etth1_compress"):
        write_page(results, tmp_path / "docs", BASE)


def test_the_header_states_the_yardstick() -> None:
    text = page_header("etth1", "`results/etth1/summary/`", provenance(BASE))
    assert "their whole commands took 8 min 20 s (Snakemake benchmark files)" in text
    assert "wall time / (benchmark seconds / 2 cores) = **1.20**" in text and "aims at is <= 1.25" in text
    assert "pause" not in text


def test_the_header_takes_pauses_out_of_the_wall_time() -> None:
    text = page_header("etth1", "x", provenance(BASE, pauses=2, span_s=86400.0))
    assert "less 2 stretches of 5 min or more in which none of these jobs ran" in text and "span 24 h 00 min" in text


def test_an_overlay_page_says_why_it_has_no_ratio() -> None:
    why = "an overlay's jobs share their time with its base grid's"
    text = page_header("etth1_compress", "x", provenance(COMPRESS, wall_over_bench_per_core=None, no_ratio=why))
    assert f"not computed ({why})" in text and "**" not in text


def test_the_header_says_how_many_jobs_had_no_benchmark() -> None:
    text = page_header("etth1", "x", provenance(BASE, bench_missing=3, bench_files=1))
    assert "3 without one, not counted" in text
    text = page_header("etth1", "x", provenance(BASE, bench_s=0.0, bench_files=0, bench_missing=4,
                                           wall_over_bench_per_core=None))
    assert "not computed (no benchmark files)" in text and "**" not in text


def test_a_summary_without_benchmark_times_still_makes_a_page() -> None:
    prov = provenance(BASE)
    for key in ("bench_s", "bench_files", "bench_missing", "cores", "wall_over_bench_per_core"):
        del prov["times"][key]
    text = page_header("etth1", "x", prov)
    assert "runs were open 6 min 40 s in all" in text and "benchmark" not in text


HEADLINE = """| dataset | model | seeds_L96 | mse_L96 | mse_val_chosen | val_chosen_lookbacks |
|---|---|---|---|---|---|
| etth1 | linear | 1 | 0.4407 | 0.4075 | 336 |
| etth1 | dlinear | 1 | 0.4571 | 0.4571 | 96 |
"""


def test_the_index_takes_each_headline_from_its_page(tmp_path: Path) -> None:
    from seqcomp.publish.index import index

    results, docs = tmp_path / "results" / "etth1", tmp_path / "docs"
    fake_summary(results, BASE, "x")
    (results / "summary" / "headline.md").write_text("# etth1: headline (fp32, test MSE)\n\n" + HEADLINE)
    write_page(results, docs, BASE)
    text = index(docs)
    row = next(line for line in text.splitlines() if line.startswith("| `config/etth1.yaml`"))
    assert "etth1, test MSE at L96: linear 0.4407, dlinear 0.4571" in row
    assert "at the validation-chosen lookback: linear 0.4075, dlinear 0.4571" in row  # it differs: shown too
    assert "(4 jobs in 5 min 00 s, wall / (jobs' seconds / cores) = 1.20)" in row and "[etth1](results/etth1.md)" in row
    smoke = next(line for line in text.splitlines() if line.startswith("| `config/smoke.yaml`"))
    assert "not run (no page)" in smoke  # a page not generated is said, not left out


PAGE = """# Results: x

- commit: `0123456789abcdef0123`

## Headline

| dataset | model | mse | latency_b1_ms | speedup_b1 |
|---|---|---|---|---|
| tiny | lstm | 0.7772 | 1.20 | 1.1 |
| tiny | s4d | 0.8375 | 2.40 | 0.9 |
"""


def test_a_regenerated_page_says_whether_its_numbers_changed() -> None:
    from seqcomp.publish.compare import compare_pages

    timings_only = PAGE.replace("1.20", "1.31").replace("0.9 |", "0.8 |")
    line = compare_pages(PAGE, timings_only)
    assert line.startswith("- numbers: every one of the 6 non-timing cells equals the committed page (made at `0123456789ab`)'s")
    assert "2 timing cells differ" in line
    moved = compare_pages(PAGE, PAGE.replace("0.8375", "0.8376"))
    assert "1 of 6 non-timing cells differ" in moved and "row 'tiny s4d', mse: 0.8375 -> 0.8376" in moved
    fewer = compare_pages(PAGE, PAGE.replace("| tiny | s4d | 0.8375 | 2.40 | 0.9 |\n", ""))
    assert "has 1 rows, was 2" in fewer
