"""Benchmarks: measured on this machine, printed as tables, never asserted in tests."""
