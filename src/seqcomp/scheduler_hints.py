"""After a failed run: which job a scheduler killed for its memory or time request, and what to raise.

snakemake-executor-plugin-slurm reports such a job as ``SLURM status is: 'FAILED'. Reason:
Unknown`` on clusters that police memory by polling (jobacct_gather), and never names the
resource. Slurm's own words are in the job's log (``slurmstepd: ... exceeded memory limit``,
``... oom_kill event ...``, ``CANCELLED ... DUE TO TIME LIMIT``), so the Snakefile's
``onerror`` reads the logs of the failed jobs and names the setting to raise.
"""

from __future__ import annotations

import re
from pathlib import Path

# Snakemake's error block: "Error in rule <name>:" ... "log: <rule log>, <slurm log> (check log ..."
ERROR_BLOCK = re.compile(r"^Error in rule (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)
SLURM_LOG = re.compile(r"(\S*slurm_logs/\S+?\.log)\b")
EXTERNAL_ID = re.compile(r"external_jobid: (\S+)")
KILLED_FOR = {  # Slurm's wording (slurmstepd, slurmctld) -> the rule resource that sets the request
    "mem_mb": re.compile(r"exceeded (?:job )?memory limit|oom[-_]kill", re.I),
    "runtime": re.compile(r"DUE TO TIME LIMIT", re.I),
}


def resource_hints(snakemake_logs: str | list[str]) -> list[str]:
    """One line per failed job whose Slurm log says it was killed for its memory or time request.

    ``snakemake_logs``: the run's log file(s), as Snakemake hands them to ``onerror``."""
    paths = [snakemake_logs] if isinstance(snakemake_logs, str) else snakemake_logs
    text = "".join(Path(p).read_text(errors="replace") for p in paths)
    hints = []
    for rule, block in ERROR_BLOCK.findall(text):
        job = EXTERNAL_ID.search(block)
        for log in dict.fromkeys(SLURM_LOG.findall(block)):
            text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
            for resource, pattern in KILLED_FOR.items():
                if pattern.search(text):
                    hints.append(
                        f"Slurm job {job.group(1) if job else '?'} (rule {rule}) was killed for exceeding its "
                        f"{resource} request ({log}): raise it, e.g. --set-resources {rule}:{resource}=<more>, "
                        f"or under set-resources: {rule}: in the profile."
                    )
    return hints
