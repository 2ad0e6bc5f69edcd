"""Links into the MLflow UI that open each experiment's training runs.

Opened plainly, MLflow 3's UI lands an experiment on its GenAI "Overview" of traces, empty for
a project that logs runs, not traces; ``?workflowType=machine_learning`` selects the runs view.
The experiments are read from the SQLite store directly: importing MLflow to list them costs
seconds before the UI even starts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from seqcomp.errors import SeqcompError


def experiment_links(store: str | Path, url: str) -> list[str]:
    """``<name>: <url>/#/experiments/<id>?workflowType=machine_learning`` per live experiment of the
    SQLite store ``store`` (deleted ones left out), in creation order; none for a missing store."""
    if not Path(store).is_file():
        return []
    try:
        with sqlite3.connect(f"file:{Path(store).resolve()}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active' "
                              "ORDER BY experiment_id").fetchall()
    except sqlite3.Error as exc:
        raise SeqcompError(f"{store}: cannot read its experiments ({exc}); is it an MLflow SQLite store?") from None
    return [f"{name}: {url.rstrip('/')}/#/experiments/{eid}?workflowType=machine_learning" for eid, name in rows]
