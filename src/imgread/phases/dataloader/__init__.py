"""The DataLoader phase: a PyTorch DataLoader fed from the JPEGs, a decoded cache or tar
shards; its runner, dataset, collate, decoded cache, overhead benchmark, tables, figures."""
