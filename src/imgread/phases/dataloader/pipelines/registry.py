"""The DataLoader pipelines imgread knows: the built-in ones (one module each in this folder)
and any other package's registered under the ``imgread.pipelines`` entry-point group
(``name = "module:object"``, the object a :class:`~imgread.phases.dataloader.pipelines.base.
Pipeline`), checked against the contract when they load, as imgread.decoders.registry finds
a decoder. The phase's variants are these pipelines, in this order."""

from __future__ import annotations

import functools
import re

from imgread.errors import UserError
from imgread.phases.dataloader.pipelines.base import LAYOUTS, Pipeline
from imgread.plugins import builtin_objects, by_name, entry_point_objects, name_problems

BUILTIN = (
    "imgread.phases.dataloader.pipelines.torch_loader:PIPELINE",
    "imgread.phases.dataloader.pipelines.torchvision_imagefolder:PIPELINE",
    "imgread.phases.dataloader.pipelines.torchvision_io:PIPELINE",
    "imgread.phases.dataloader.pipelines.tf_data:PIPELINE",
    "imgread.phases.dataloader.pipelines.dali_cpu:PIPELINE",
    "imgread.phases.dataloader.pipelines.litdata_stream:PIPELINE",
    "imgread.phases.dataloader.pipelines.s3torch_map:PIPELINE",
)
ENTRY_POINT_GROUP = "imgread.pipelines"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def check_pipeline(pipeline: object, where: str, entry_name: str | None = None) -> Pipeline:
    """The contract a pipeline must meet, checked when it loads (RuntimeError naming ``where``
    and every problem): a Pipeline with a lower-case name (its entry point's, for a plug-in),
    a description, a "module:callable" start, and a known layout."""
    if not isinstance(pipeline, Pipeline):
        raise RuntimeError(
            f"pipeline {where} is {type(pipeline).__name__}, not an instance of "
            "imgread.phases.dataloader.pipelines.base.Pipeline"
        )
    problems = name_problems(pipeline.name, entry_name, _NAME)
    if not isinstance(pipeline.description, str) or not pipeline.description.strip():
        problems.append("no description (one line: the library and how it loads)")
    module, sep, attr = str(pipeline.start).partition(":")
    if not (sep and module and attr):
        problems.append(f"start {pipeline.start!r} is not 'module:callable'")
    if pipeline.layout not in LAYOUTS:
        problems.append(f"layout {pipeline.layout!r} is not one of {', '.join(LAYOUTS)}")
    if not isinstance(pipeline.imports, tuple):
        problems.append(f"imports {pipeline.imports!r} must be a tuple of module names")
    if problems:
        raise RuntimeError(f"pipeline {where} breaks the pipeline contract: {'; '.join(problems)}")
    return pipeline


@functools.cache
def pipelines() -> dict[str, Pipeline]:
    """{name: pipeline} of the built-in pipelines and every registered one, each checked."""
    plugins = entry_point_objects(ENTRY_POINT_GROUP, "pipeline")
    return by_name([*builtin_objects(BUILTIN), *plugins], check_pipeline, "pipeline")


def get(name: str) -> Pipeline:
    """The pipeline ``name``; UserError naming the known ones otherwise."""
    known = pipelines()
    if name not in known:
        raise UserError(f"unknown dataloader pipeline {name!r}; choose one of {', '.join(known)}")
    return known[name]
