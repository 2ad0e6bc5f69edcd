"""Publishing: the generated pages and the provenance behind every number on them.

One path for both kinds of page. A pipeline page (docs/results/<page>.md, :mod:`.pages`) is
built from a summary folder by the workflow's ``pages`` rule; the micro-benchmarks' page
(docs/results/microbench.md, :mod:`.bench`) from bench/results. Both use one provenance record
(:mod:`.record`: command, commit, whether the code that made the result was uncommitted,
machine, load, wall time), one reader of Snakemake benchmark files and one wall/compute ratio
(:mod:`.timing`), and one markdown table writer and page header (:mod:`.markdown`).

This package lives outside seqcomp/summary on purpose: the summary jobs import only
:mod:`.record` and :mod:`.timing`, so an edit of a page's layout reruns no summary.
"""
