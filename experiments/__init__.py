"""Hydra apps, configs and benchmarks; the only package that imports Hydra."""
