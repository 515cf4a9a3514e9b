"""web package: the live page, /api and /metrics of a pipeline (``[web]``, docs/operations.md)."""
