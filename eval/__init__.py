"""Benchmarks for mark (import name `mark_eval`; folder `eval/`)."""
