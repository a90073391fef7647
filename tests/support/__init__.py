"""Helpers that write test data; shared by the tests and the benchmarks."""
