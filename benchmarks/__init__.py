"""Benchmarks: not tests. They write their results to benchmarks/results/."""
