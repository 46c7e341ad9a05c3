"""format: see docs/architecture.md."""
