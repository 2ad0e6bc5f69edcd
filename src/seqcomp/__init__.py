"""seqcomp: sequence models and their compression, as a Snakemake pipeline."""

from pathlib import Path

# The checkout (config/, workflow/, src/): defined here, where every module can import it
# without importing another (config's would pull in jsonschema, and a cycle with its users).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
