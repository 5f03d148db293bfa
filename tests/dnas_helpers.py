"""Shared DNAS test settings: a search small enough to run in a few seconds on tiny random BERTs."""

from distilsearch.search.dnas.train import DNASConfig

TINY_SEARCH = DNASConfig(
    steps=4,
    weight_lr=1e-3,
    arch_lr=0.2,
    batch_size=16,
    max_length=16,
    report_every=2,
    validation_rows=32,
    flops_point=(1, 16),
)
