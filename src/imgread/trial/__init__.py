"""The trial engine: a spec built once, run (prepare, start, prove the cache, time, close,
verify) and written as one tidy record; the worker pools the phases start."""
