"""The phases: one module each (load, decode, dataloader, stream), behind the contract of
:mod:`imgread.phases.base`, listed by :mod:`imgread.phases.registry`.

This package module imports nothing, so that a phase module can import the base without
loading the others (``docs/adding-a-phase.md`` walks through adding one).
"""
