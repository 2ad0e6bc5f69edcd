"""The pretrain: section: the transfer jobs it generates and every refusal before any job."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from seqcomp import jobs
from seqcomp.config import load_config
from seqcomp.config_pretrain import percent, variant_name
from seqcomp.errors import ConfigError

SMOKE = yaml.safe_load((ROOT / "config" / "smoke_pretrain.yaml").read_text())


def config(**changes) -> dict:
    """The smoke pretrain config with ``a__b=value`` keys set."""
    cfg = copy.deepcopy(SMOKE)
    for path, value in changes.items():
        node, keys = cfg, path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return cfg


def refused(cfg: dict, *words: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(cfg, base_dir=ROOT)
    for word in words:
        assert word in str(exc.value), str(exc.value)
    return str(exc.value)


def test_the_shipped_pretrain_configs_are_valid() -> None:
    """config/pretrain.yaml with a smaller corpus: generating its 1000 series takes a minute."""
    for name in ("pretrain.yaml", "pretrain_gpu.yaml", "smoke_pretrain.yaml"):
        cfg = yaml.safe_load((ROOT / "config" / name).read_text())
        for entry in cfg["datasets"].values():
            if entry["kind"] == "kernel_synth":
                entry.update(n_series=min(entry["n_series"], 16), mixes=min(entry.get("mixes", 0), 4))
        if "etth1" in cfg["datasets"] and not (ROOT / cfg["datasets"]["etth1"]["path"]).is_file():
            pytest.skip("ETTh1 not present")
        assert load_config(cfg, base_dir=ROOT)["pretrain"]["corpus"]


def test_transfer_entries_are_generated_and_the_corpus_is_not_scored() -> None:
    cfg = load_config(copy.deepcopy(SMOKE), base_dir=ROOT)
    generated = {n for n, e in cfg["models"].items() if "transfer" in e}
    assert generated == {"ttm_zs", "ttm_fs25_first_head", "ttm_fs25_first_whole", "ttm_scratch25_first", "ttm_full"}
    points = jobs.grid(cfg)
    assert {p["dataset"] for p in points} == {"tiny"}  # the corpus dataset gets no grid jobs
    assert {p["model"] for p in points} == generated | {"ttm"}
    spec = jobs.train_spec(cfg, "tiny", "ttm_fs25_first_head", 32, 8, 0)
    assert spec["transfer"] == {"pretrained": "ttm", "regime": "few_shot", "fraction": 0.25, "windows": "first",
                                "tune": "head", "pretrain_horizon": 8, "corpus": ["corpus"], "context": 32,
                                "overlap": False}
    assert spec["params"] == jobs.train_spec(cfg, "tiny", "ttm", 32, 8, 0)["params"]  # the same architecture
    assert jobs.train_spec(cfg, "tiny", "ttm_zs", 32, 8, 0)["train"] == {}  # nothing is fitted
    assert jobs.pretrained_input(cfg, "ttm_zs", 32) == ["results/smoke_pretrain/pretrain/ttm/L32/model.pt"]
    assert jobs.pretrained_input(cfg, "ttm_scratch25_first", 32) == [] == jobs.pretrained_input(cfg, "ttm", 32)
    assert jobs.pretrain_spec(cfg, "ttm", 32)["train"]["max_epochs"] == 2


def test_a_pretrained_model_may_skip_its_from_scratch_grid_jobs() -> None:
    cfg = load_config(config(pretrain__from_scratch=False), base_dir=ROOT)
    models = {p["model"] for p in jobs.grid(cfg)}
    assert "ttm" not in models and "ttm_zs" in models


def test_fine_tuning_settings_go_to_tuned_jobs_only() -> None:
    cfg = load_config(config(pretrain__transfer__train={"lr": 1.0e-5}), base_dir=ROOT)
    lr = {m: jobs.train_spec(cfg, "tiny", m, 32, 8, 0)["train"].get("lr") for m in cfg["models"]}
    assert lr["ttm_full"] == lr["ttm_fs25_first_whole"] == 1.0e-5
    assert lr["ttm_scratch25_first"] == lr["ttm"] == 0.001  # the control trains with the model's own recipe


def test_names() -> None:
    assert percent(0.05) == "5" and percent(0.1) == "10" and percent(0.025) == "2p5"
    assert variant_name("ttm", {"regime": "scratch", "fraction": 0.05, "windows": "last"}) == "ttm_scratch5_last"


def test_a_corpus_dataset_as_target_is_refused_unless_overlap_is_allowed() -> None:
    refused(config(pretrain__targets=["tiny", "corpus"]), "'corpus'", "allow_overlap")
    cfg = load_config(config(pretrain__targets=["tiny", "corpus"], pretrain__allow_overlap=True), base_dir=ROOT)
    assert jobs.train_spec(cfg, "corpus", "ttm_zs", 32, 8, 0)["transfer"]["overlap"] is True
    assert jobs.train_spec(cfg, "tiny", "ttm_zs", 32, 8, 0)["transfer"]["overlap"] is False


def test_a_target_reading_the_corpus_file_is_refused(tmp_path: Path) -> None:
    rows = ["date,a,b"] + [f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{i % 7},{(i * 3) % 11}" for i in range(600)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    cfg = config()
    split = {"ratios": [0.6, 0.2, 0.2]}
    cfg["datasets"] = {"target": {"kind": "csv", "path": str(tmp_path / "s.csv"), "split": split},
                       "corpus": {"kind": "csv", "path": str(tmp_path / ".." / tmp_path.name / "s.csv"), "split": split}}
    refused(cfg, "'target' reads the same data as corpus dataset 'corpus'")


def test_a_corpus_shorter_than_the_context_is_refused() -> None:
    refused(config(pretrain__horizon=60), "pretrain.corpus", "'corpus'", "context 32 + horizon 60", "val split")


def test_a_context_the_patch_does_not_divide_is_refused() -> None:
    refused(config(pretrain__contexts=[36], lookbacks=[36]), "pretrain.contexts", "context 36", "patch")


def test_a_fraction_below_one_batch_is_refused() -> None:
    refused(config(pretrain__transfer__fractions=[0.02]), "pretrain.transfer.fractions", "fewer than one batch", "'tiny'")


def test_a_channel_mixing_model_cannot_transfer_from_one_channel() -> None:
    refused(config(models__ttm__decoder_channel_mixing=True), "pretrain.models", "'tiny' (3 channels)")


def test_channel_mixing_needs_a_model_that_has_it() -> None:
    cfg = config(pretrain__transfer__channel_mixing=True)
    cfg["models"]["lstm"] = {"hidden": 8}
    cfg["pretrain"]["models"] = ["ttm", "lstm"]
    refused(cfg, "pretrain.transfer.channel_mixing", "'lstm'")
    ok = load_config(config(pretrain__transfer__channel_mixing=True), base_dir=ROOT)
    assert ok["models"]["ttm_full"]["decoder_channel_mixing"] is True
    assert "decoder_channel_mixing" not in ok["models"]["ttm_zs"]  # untrained mixing layers: not for zero-shot


def test_head_tuning_needs_a_declared_head() -> None:
    cfg = config()
    cfg["models"]["lstm"] = {"hidden": 8}
    cfg["pretrain"]["models"] = ["lstm"]
    refused(cfg, "pretrain.transfer.tune", "transfer_head")


def test_names_and_hand_written_entries_are_checked() -> None:
    refused(config(pretrain__corpus=[]), "pretrain.corpus")
    refused(config(pretrain__corpus=["nope"]), "pretrain.corpus", "'nope'")
    refused(config(pretrain__models=["nope"]), "pretrain.models", "'nope'")
    cfg = config()
    cfg["models"]["mine"] = {"kind": "ttm", "transfer": {"regime": "zero_shot"}}
    refused(cfg, "models.mine.transfer", "generated")
    refused(config(pretrain__horizon=4), "pretrain.horizon")
    refused(config(pretrain__corpus=["corpus", "tiny"]), "none is left to score")


def test_a_pretraining_batch_must_split_over_its_processes() -> None:
    refused(config(pretrain__train={"batch_size": 33, "devices": 2}), "pretrain.train.batch_size 33", "devices 2")
    refused(config(pretrain__transfer__train={"batch_size": 15, "devices": 2}), "pretrain.transfer.train.batch_size")
    cfg = load_config(config(pretrain__train={"batch_size": 32, "devices": 2}), base_dir=ROOT)
    assert jobs.train_processes(cfg, "ttm", pretrain=True) == 2 and jobs.train_processes(cfg, "ttm") == 1
    assert jobs.train_gpus(cfg, "ttm_zs") == 0  # zero-shot fits nothing


def test_the_logged_resolved_config_runs_as_a_config_again(tmp_path: Path) -> None:
    """Training runs log the resolved config; the entries pretrain: generates are left out of
    it (a hand-written transfer key is refused), and loading it generates them again."""
    from seqcomp.tracking import write_resolved_config

    cfg = load_config(copy.deepcopy(SMOKE), base_dir=ROOT)
    write_resolved_config(cfg, tmp_path / "config.yaml")
    again = load_config(yaml.safe_load((tmp_path / "config.yaml").read_text()), base_dir=ROOT)
    assert again["models"] == cfg["models"]
