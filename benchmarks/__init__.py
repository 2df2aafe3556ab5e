"""Benchmarks of autoflow against raw Huey (see ``docs/performance.md``)."""
