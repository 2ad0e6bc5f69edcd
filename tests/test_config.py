"""Config validation: every mistake fails before any job runs, naming the key."""

from __future__ import annotations

import json

import copy
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from seqcomp.config import load_config
from seqcomp.errors import ConfigError, SeqcompError

SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def broken(**changes) -> dict:
    cfg = copy.deepcopy(SMOKE)
    for path, value in changes.items():
        node = cfg
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return cfg


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "etth1.yaml", "etth1_linear.yaml", "synthetic.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(ROOT / "config" / name, base_dir=ROOT)
    assert cfg["models"] and cfg["passes"]


def test_the_cpu_sized_etth1_is_etth1_with_fewer_models() -> None:
    """config/etth1_linear.yaml is a copy of etth1.yaml (a config cannot drop an overlay's
    models): it must not drift from it in anything but its name and its subset of models."""
    full = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    cheap = yaml.safe_load((ROOT / "config" / "etth1_linear.yaml").read_text())
    assert cheap["name"] == "etth1_linear" and set(cheap["models"]) < set(full["models"])
    assert all(cheap["models"][m] == full["models"][m] for m in cheap["models"])
    assert {k: v for k, v in cheap.items() if k not in ("name", "models")} == \
        {k: v for k, v in full.items() if k not in ("name", "models")}


def test_the_long_lookback_overlay_merges_into_etth1() -> None:
    """config/etth1_long.yaml is passed after etth1.yaml; Snakemake merges them key by key."""
    from snakemake.utils import update_config

    from seqcomp import jobs

    merged = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    update_config(merged, yaml.safe_load((ROOT / "config" / "etth1_long.yaml").read_text()))
    cfg = load_config(merged, base_dir=ROOT)
    assert cfg["models"]["s4d"]["revin"] is True  # etth1.yaml's keys survive the overlay
    points = {(p["model"], p["lookback"], p["seed"]) for p in jobs.grid(cfg)}
    assert ("s4d", 720, 2) in points and ("naive", 96, 0) in points and ("naive", 336, 0) not in points


def test_the_cpu_sized_long_overlay_is_part_of_the_long_overlay() -> None:
    """config/etth1_long_cpu.yaml runs the CPU-feasible models of etth1_long.yaml: each of its
    entries must equal the full overlay's (else its page would not be a part of that grid), and
    the models it leaves out stay at etth1.yaml's lookback 96 and seed 0."""
    from snakemake.utils import update_config

    from seqcomp import jobs

    full = yaml.safe_load((ROOT / "config" / "etth1_long.yaml").read_text())
    cpu = yaml.safe_load((ROOT / "config" / "etth1_long_cpu.yaml").read_text())
    assert set(cpu) == {"models"} and set(cpu["models"]) < set(full["models"])
    assert all(cpu["models"][m] == full["models"][m] for m in cpu["models"])
    merged = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    update_config(merged, cpu)
    points = {(p["model"], p["lookback"], p["seed"]) for p in jobs.grid(load_config(merged, base_dir=ROOT))}
    assert ("dlinear", 720, 2) in points and ("smamba", 96, 0) in points and ("smamba", 336, 0) not in points


def test_the_compress_overlay_merges_into_etth1_and_its_passes_validate() -> None:
    from snakemake.utils import update_config

    merged = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    update_config(merged, yaml.safe_load((ROOT / "config" / "etth1_compress.yaml").read_text()))
    cfg = load_config(merged, base_dir=ROOT)  # validates every pass's parameters
    assert cfg["passes"]["w4_gptq_dq_sim"]["scale_dtype"] == "float8_e4m3" and "w4_rtn_sim" in cfg["passes"]


PASS_OVERLAYS = ["etth1_compress.yaml", "etth1_group_bits.yaml", "etth1_mp_pareto.yaml", "etth1_lowbit.yaml"]


@pytest.mark.parametrize("name", PASS_OVERLAYS)
def test_each_pass_overlay_merges_into_etth1_and_its_passes_validate(name: str) -> None:
    from snakemake.utils import update_config

    overlay = yaml.safe_load((ROOT / "config" / name).read_text())
    merged = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    update_config(merged, overlay)
    cfg = load_config(merged, base_dir=ROOT)  # validates every pass's parameters
    assert set(overlay["passes"]) <= set(cfg["passes"]) and cfg["horizons"] == [96]


def test_pass_overlays_merge_without_conflicts_or_repeated_work() -> None:
    """The overlays may be given together: a pass name means the same pass in each, and no pass
    runs twice under two names (specs compared after defaults, so spelling does not hide one)."""
    from seqcomp.compress import pass_config

    entries: dict[str, dict] = {}
    for name in ["etth1.yaml", *PASS_OVERLAYS]:
        for pname, entry in yaml.safe_load((ROOT / "config" / name).read_text())["passes"].items():
            assert entries.setdefault(pname, entry) == entry, f"{name}: passes.{pname} differs from another config's"
    resolved = [(e.get("kind", p), pass_config(e.get("kind", p), {k: v for k, v in e.items() if k != "kind"}, p), p)
                for p, e in entries.items()]
    for i, (kind, config, pname) in enumerate(resolved):
        same = [other for k, c, other in resolved[i + 1:] if (k, c) == (kind, config)]
        assert not same, f"passes.{pname} and {same} are the same pass"


def test_defaults_are_filled() -> None:
    cfg = load_config(SMOKE)
    assert cfg["train"]["lr"] == 0.001 and cfg["evaluate"]["latency_threads"] == 1
    assert cfg["models"]["lstm"]["kind"] == "lstm" and cfg["passes"]["w4_rtn_sim"]["kind"] == "rtn_weight_sim"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"train__max_epoch": 3}, r"train: .*'max_epoch' was unexpected.*allowed keys here: .*max_epochs"),
        ({"horizons": [0]}, r"horizons.0: 0 is less than the minimum of 1"),
        ({"train__accelerator": "tpu"}, r"train.accelerator: 'tpu' is not one of \['auto', 'cpu', 'gpu'\]"),
        ({"models__foo": {}}, r"models.foo: unknown model 'foo'; valid models: .*dlinear"),
        ({"passes__int3": {}}, r"passes.int3: unknown pass 'int3'; valid passes: .*fp32"),
        ({"models__lstm": {"hidden": -4}}, r"models.lstm: .*hidden"),
        ({"models__lstm": {"hiden": 5}}, r"models.lstm: unknown key\(s\) hiden; valid keys: .*hidden"),
        ({"passes__w4_rtn_sim__bits": 1}, r"passes.w4_rtn_sim: .*bits"),
        ({"datasets__tiny__kind": "parquet"}, r"datasets.tiny: unknown dataset kind 'parquet'; valid dataset kinds: ar, csv, induction_heads, kernel_synth, selective_copying, synthetic"),
        ({"lookbacks": [500]}, r"lookback 500 \+ horizon 8 leaves no train/val window in dataset 'tiny'"),
        ({"models__lstm": {"lookbacks": [500]}}, r"lookback 500 \+ horizon 8 leaves no train/val window"),
        ({"models__lstm": {"seeds": [-1]}}, r"models.lstm.seeds.0: -1 is less than the minimum of 0"),
        ({"datasets__tiny__split": {"ratios": [0.5, 0.2]}}, r"datasets.tiny.split.ratios"),
        ({"name": "../escape"}, r"name: '../escape' does not match"),
        ({"train__devices": 3}, r"train.batch_size 32 is not divisible by train.devices 3"),
        ({"train__devices": 0}, r"train.devices: 0 is less than the minimum of 1"),
        ({"models__lstm": {"train": {"batch_size": 10, "devices": 4}}},
         r"models.lstm.train.batch_size 10 is not divisible by models.lstm.train.devices 4"),
    ],
)
def test_bad_config_names_the_key(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(broken(**changes))


def test_missing_csv_fails_at_config_time(tmp_path: Path) -> None:
    cfg = broken(datasets={"x": {"kind": "csv", "path": str(tmp_path / "missing.csv")}})
    with pytest.raises(Exception, match=r"missing.csv: file not found \(datasets.x.path\)"):
        load_config(cfg)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["1.0"] * 30, list(range(30)), r"datasets.x: channel\(s\) \['a'\] are constant over the train split"),
        ([*range(29), "1e39"], [2] * 30, r"x.csv: column 'a' line 31: '1e39' is beyond the float32 range"),
        ([1], [2], r"datasets.x.split: the series has 1 row"),
    ],
)
def test_data_that_a_job_would_refuse_fails_at_config_time(tmp_path: Path, a: list, b: list, expected: str) -> None:
    """`python -m seqcomp validate` and the DAG build read the data: no job starts on a bad file."""
    dates = [f"2020-01-{1 + h // 24:02d} {h % 24:02d}:00" for h in range(len(a))]
    (tmp_path / "x.csv").write_text("\n".join(["date,a,b", *(f"{d},{x},{y}" for d, x, y in zip(dates, a, b))]) + "\n")
    cfg = broken(datasets={"x": {"kind": "csv", "path": str(tmp_path / "x.csv"), "split": {"ratios": [0.5, 0.2, 0.3]}}},
                 lookbacks=[2], horizons=[1])
    with pytest.raises(SeqcompError, match=expected):
        load_config(cfg)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets:\n  a: {kind: csv\n  b: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: line 4, column 4: expected ',' or '}', but got ':' "
                                          r"\(while parsing a flow mapping at line 3\)$"):
        load_config(bad)


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_the_checked_config_is_memoized_until_something_it_read_changes(tmp_path: Path) -> None:
    """Snakemake builds the DAG on every call: the plug-in checks (which import torch) run once
    per distinct config + code + data file, and a memo never hides a new error."""
    good = broken()
    first = load_config(good, memo_dir=tmp_path)
    memo = tmp_path / "smoke.json"
    assert memo.is_file() and load_config(good, memo_dir=tmp_path) == first == load_config(good)
    kept = json.loads(memo.read_text())
    kept["config"]["models"]["lstm"]["hidden"] = 999  # a memo is used only under its own key...
    memo.write_text(json.dumps(kept))
    assert load_config(good, memo_dir=tmp_path)["models"]["lstm"]["hidden"] == 999
    with pytest.raises(ConfigError, match="models.lstm: unknown key"):  # ...and a changed config is checked again
        load_config(broken(models__lstm={"hiden": 5}), memo_dir=tmp_path)


def smoke_file(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text((ROOT / "config" / "smoke.yaml").read_text() + text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seeds: [0.0]\n", r"x.yaml line 4\d: seeds.0: 0.0 is not an integer; write 0, not 0.0"),
        ("lookbacks: [24.0]\n", r"line 4\d: lookbacks.0: 24.0 is not an integer; write 24, not 24.0"),
        ("seeds: [true]\n", r"seeds.0: True is not an integer; write an integer, not true"),
        ("seeds: [4294967296]\n", r"seeds.0: 4294967296 is greater than the maximum of 4294967295"),
    ],
)
def test_a_float_or_bool_is_no_integer_in_the_schema(tmp_path: Path, text: str, expected: str) -> None:
    lines = (ROOT / "config" / "smoke.yaml").read_text().splitlines()
    key = text.partition(":")[0]
    path = tmp_path / "x.yaml"
    path.write_text("\n".join(line for line in lines if not line.startswith(key + ":")) + "\n" + text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("n_steps: 600", "n_steps: 600.0", r"x.yaml line 12: datasets.tiny.n_steps: 600.0 is not an integer; write 600"),
        ("hidden: 16", "hidden: '16'", r"x.yaml line 19: models.lstm.hidden: '16' is not an integer; write it without quotes"),
        ("bits: 4}", "bits: true}", r"line 25: passes.w4_rtn_sim.bits: True is not an integer"),
        ("lstm: {hidden: 16}", "lstm: {hiden: 16}", r"x.yaml line 19: models.lstm: unknown key\(s\) hiden"),
    ],
)
def test_a_plugin_key_of_the_wrong_type_is_refused_naming_file_line_and_key(tmp_path: Path, old: str, new: str,
                                                                            expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text((ROOT / "config" / "smoke.yaml").read_text().replace(old, new))
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_an_alias_bomb_is_refused_at_its_line_in_well_under_a_second(tmp_path: Path) -> None:
    import time

    bomb = "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 9))
    path = tmp_path / "bomb.yaml"
    path.write_text("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + bomb + "models:\n  linear: {cycle: *x8}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml line 5: key x4.0: alias \*x3 makes the config more than 10000"):
        load_config(path)
    assert time.perf_counter() - start < 0.5


def test_a_key_set_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = smoke_file(tmp_path, "models:\n  lstm: {}\n  lstm: {hidden: 4}\n")
    with pytest.raises(ConfigError, match=r"x.yaml line \d+: key models is set twice \(also at line 17\)"):
        load_config(path)


def test_an_overlay_refusal_names_the_overlay_that_set_the_key(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "config" / "smoke.yaml").read_text())
    overlay = tmp_path / "over.yaml"
    overlay.write_text("name: smoke\ntrain:\n  batch_size: 8.0\n")
    with pytest.raises(ConfigError, match=r"over.yaml line 3: train.batch_size: 8.0 is not an integer; write 8"):
        load_config([base, overlay])


def test_a_config_file_name_that_cannot_be_a_folder_is_refused() -> None:
    from seqcomp.publish.pages import page_name

    assert page_name(["smoke.yaml", "my overlay.yaml"], "smoke") == "smoke_my overlay"
    with pytest.raises(ConfigError, match=r"'x\{y\}.yaml': its name becomes part of the page.*rename it"):
        page_name(["smoke.yaml", "x{y}.yaml"], "smoke")
