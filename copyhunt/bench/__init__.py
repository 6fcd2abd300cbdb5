"""Benchmarks run from the CLI (``copyhunt bench``): A/B logic only; the CLI renders and prints."""
