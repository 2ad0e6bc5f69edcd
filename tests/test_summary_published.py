"""The published-results file: every value has a source with its paper, table and protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from seqcomp.config import load_config
from seqcomp.errors import ConfigError
from seqcomp.summary.published import load_published, trained_on_target

ETT = ROOT / "config" / "published" / "ett.yaml"


def test_the_ett_file_validates_and_every_value_has_a_source() -> None:
    rows = load_published(ETT)
    assert {r["horizon"] for r in rows} <= {"96", "192", "336", "720", "avg"}
    for r in rows:
        assert r["paper"] and r["table"] and r["lookback"] and r["drop_last"] in ("true", "false", "unknown"), r
        assert 0 < r["value"] < 2, r  # scaled ETTh1 errors
    # the pre-trained models' transfer values go beside a pre-training config's variants (test_summary_transfer)
    compared = {r["model"] for r in trained_on_target(rows) if r["model"]}
    etth1 = yaml.safe_load((ROOT / "config" / "etth1.yaml").read_text())
    assert compared <= set(etth1["models"]), "a published value names a model that config/etth1.yaml lacks"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["results"]["etth1"][0].pop("source"), "'source' is a required property"),
    (lambda d: d["sources"]["dlinear_t2"].pop("drop_last"), "'drop_last' is a required property"),
    (lambda d: d["results"]["etth1"][0].update(source="nowhere"), "unknown source 'nowhere'"),
    (lambda d: d["results"]["etth1"][0]["mse"].update({"h96": 0.3}), "results.etth1.0.mse"),
])
def test_a_value_without_a_full_source_is_refused(tmp_path: Path, break_it, message: str) -> None:
    data = yaml.safe_load(ETT.read_text())
    break_it(data)
    with pytest.raises(ConfigError, match="published.yaml") as err:
        load_published(write(tmp_path, data))
    assert message in str(err.value)


def test_the_config_key_is_checked_when_the_config_loads(tmp_path: Path) -> None:
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config({**smoke, "published": str(tmp_path / "missing.yaml")})
    data = yaml.safe_load(ETT.read_text())
    data["results"]["etth1"][0].pop("source")
    with pytest.raises(ConfigError, match="'source' is a required property"):
        load_config({**smoke, "published": str(write(tmp_path, data))})


@pytest.mark.parametrize("break_it, message", [
    (lambda e: e.pop("fraction"), "'fraction' is a required property"),  # a few-shot value without its share
    (lambda e: e.update(regime="zero_shot"), "should not be valid"),  # a share on a value that has none
    (lambda e: e.update(regime="one_shot"), "'one_shot' is not one of"),
    (lambda e: e.update(fraction=5), "results.etth1"),  # a percentage where a share belongs
])
def test_a_transfer_value_needs_a_consistent_regime(tmp_path: Path, break_it, message: str) -> None:
    data = yaml.safe_load(ETT.read_text())
    few_shot = next(e for e in data["results"]["etth1"] if e.get("regime") == "few_shot")
    break_it(few_shot)
    with pytest.raises(ConfigError, match="published.yaml") as err:
        load_published(write(tmp_path, data))
    assert message in str(err.value)


def test_a_per_horizon_context_is_printed_in_horizon_order(tmp_path: Path) -> None:
    data = yaml.safe_load(ETT.read_text())
    data["sources"]["dlinear_t2"]["lookback"] = {720: 3072, 96: 512}
    rows = load_published(write(tmp_path, data))
    assert {r["lookback"] for r in rows if r["source"] == "dlinear_t2"} == {"96:512 720:3072"}
