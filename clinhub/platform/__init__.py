"""Cross-cutting services every domain uses: logging, metrics, health (auth, audit, cache, jobs follow)."""
