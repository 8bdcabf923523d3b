"""The load phase: read the dataset's bytes from storage (sequential, asyncio, threads,
processes), cold; its tables and figures."""
