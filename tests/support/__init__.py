"""Helpers the tests and the benchmark scripts share, kept out of the shipped packages."""
