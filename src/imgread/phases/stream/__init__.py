"""The stream phase: frames produced (sequential, processes, threads, asyncio, one thread
a frame) and fed to an emulated model at a fixed rate; its tables and figures."""
