"""scheduler_hints: a Slurm kill for memory or time, found in a failed run's log, names what to raise."""

from __future__ import annotations

from pathlib import Path

from seqcomp.scheduler_hints import resource_hints

BLOCK = """Error in rule {rule}:
    message: SLURM-job '{job}' failed, SLURM status is: 'FAILED'. Reason: Unknown.
    jobid: 3
    log: results/x/logs/{rule}.log, {slurm_log} (check log file(s) for error details)
    external_jobid: {job}
Shutting down, this might take some time.
"""
SLURMSTEPD = {
    "mem_mb": "slurmstepd-n1: error: StepId=7.batch exceeded memory limit (153993216 > 31457280), being killed\n",
    "cgroup": "slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch. Some of the step tasks have been OOM Killed.\n",
    "runtime": "slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-12-06T05:04:29 DUE TO TIME LIMIT ***\n",
    "other": "Traceback (most recent call last):\nValueError: bad\n",
}


def failed_run(tmp_path: Path, slurm_text: str, rule: str = "train") -> Path:
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}" / "7.log"
    slurm_log.parent.mkdir(parents=True)
    slurm_log.write_text(slurm_text)
    main = tmp_path / "run.snakemake.log"
    main.write_text("Job 3 has been submitted\n" + BLOCK.format(rule=rule, job=7, slurm_log=slurm_log))
    return main


def test_a_memory_kill_names_the_job_its_log_and_mem_mb(tmp_path: Path) -> None:
    for where in ("mem_mb", "cgroup"):  # jobacct_gather's polling kill, a cgroup OOM kill
        main = failed_run(tmp_path / where, SLURMSTEPD[where], rule="evaluate")
        [hint] = resource_hints([str(main)])
        assert hint.startswith("Slurm job 7 (rule evaluate) was killed for exceeding its mem_mb request (")
        assert "rule_evaluate/7.log" in hint and "--set-resources evaluate:mem_mb=" in hint


def test_a_time_limit_names_runtime(tmp_path: Path) -> None:
    [hint] = resource_hints(str(failed_run(tmp_path, SLURMSTEPD["runtime"])))
    assert "exceeding its runtime request" in hint and "--set-resources train:runtime=" in hint


def test_other_failures_and_local_runs_get_no_hint(tmp_path: Path) -> None:
    assert resource_hints(str(failed_run(tmp_path, SLURMSTEPD["other"]))) == []
    local = tmp_path / "local.log"
    local.write_text(BLOCK.format(rule="train", job=7, slurm_log="").replace(", ", ""))
    assert resource_hints(str(local)) == []
