"""``pyconpro bench``: the speed figures of docs/performance.md, measured in one run on loopback.

Modules: ``native`` (the C load source, built with the machine's compiler, and the datagram
templates it patches), ``procs`` (the processes a benchmark starts and what /proc says about
them), ``counting`` (the subscriber that counts samples and checks ``sq`` and ``cs``), ``bare``
(the reference loops: a bare recv loop and bare sink loops, run as child processes),
``ceiling``, ``heartbeats``, ``opening`` and ``sinks`` (one figure each), ``runner`` (the
command: ``--quick``, ``--json``, ``--only``, ``--repeat``) and ``pipeline`` (the older
end-to-end table of ``scripts/bench_pipeline.py``).
"""
