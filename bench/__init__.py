"""The mas benchmark harness: ``python -m bench`` starts Redis, sidecars and agents and measures.

Modules: :mod:`bench.cli` (command line, runs every section, prints the table),
:mod:`bench.deploy` (policies, credentials, sidecar processes), :mod:`bench.load` (the agents'
workloads through the SDK), :mod:`bench.raw` (the raw redis-py Streams baseline),
:mod:`bench.cluster` (a Redis Cluster on loopback), :mod:`bench.procstat` (CPU and memory of a
process), :mod:`bench.report` (the table and the SVG plot), :mod:`bench.dlp_bench` (the DLP
scanner on its own). Benchmarks are not tests: CI runs ``python -m bench --smoke`` only to see
that the harness works.
"""
