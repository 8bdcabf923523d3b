"""The DataLoader phase's pipelines: one module per library that loads a training set (the
project's own ``torch`` DataLoader, and the peers users run), each declaring a
:class:`~imgread.phases.dataloader.pipelines.base.Pipeline`; the registry finds them and any
other package's under the ``imgread.pipelines`` entry-point group (docs/adding-a-pipeline.md)."""
