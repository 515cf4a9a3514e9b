"""The one log line format of every pyconpro process (supervisor, workers, sinks, the web
process, the simulator), so that a console or a log file several of them write to reads as
one: ``2026-12-06 03:37:22,313 INFO pyconpro.supervisor: ...``."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

__all__ = ["LOG_FORMAT"]
