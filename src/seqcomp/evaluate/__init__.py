"""Evaluation stage: test-split errors, honest size and CPU latency of a (compressed) model."""
