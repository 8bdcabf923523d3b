"""The decode phase: decode files already in memory (sequential, processes, threads,
processes with shared memory); its make bench sections, tables and figures."""
