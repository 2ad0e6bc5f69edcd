"""seqcomp: sequence models and their compression, as a Snakemake pipeline."""
