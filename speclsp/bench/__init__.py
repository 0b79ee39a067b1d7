"""Benchmarks: commands that print tables and write reports."""
