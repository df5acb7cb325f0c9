"""The benchmark harness behind ``scripts/bench`` (see docs/PERFORMANCE.md)."""
