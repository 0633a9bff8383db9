"""Helpers the tests share, and the benchmarks reuse: real servers to start (FerretDB, a Redis
of the embedded build, `aether-memory serve` processes), a delaying proxy, and the fault
scenarios run under load."""
