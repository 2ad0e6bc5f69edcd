"""One compression pass per file, each named as its key in seqcomp.compress.PASSES."""
