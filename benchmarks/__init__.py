"""shardflow's benchmarks: ``python -m benchmarks`` runs every suite.

- :mod:`benchmarks.common`: workload, timed regions, tables, JSON results, the machine.
- :mod:`benchmarks.fake_kinesis`: a fast fake Kinesis endpoint, in its own process.
- :mod:`benchmarks.contenders` and :mod:`benchmarks.compare`: the producer libraries side
  by side on one workload.

Results go to ``benchmarks/results/`` (git-ignored). Timings live here, never in tests.
"""
