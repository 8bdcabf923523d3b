"""The storage clients imgread knows: the built-in ``imgread`` (kind http's own reader,
:mod:`imgread.storage.http.client`) and any other package's client registered under the
``imgread.storage_clients`` entry-point group (``name = "module:object"``, the object a
:class:`~imgread.storage.clients.base.Client`), as :mod:`imgread.decoders.registry` finds a
decoder. Each is checked against the contract when it loads; one that breaks it is refused
with one line naming it and every problem.

Read on first use (:func:`clients`), not at import: a session asks for its client when it
starts, and the kinds' modules import this one.
"""

from __future__ import annotations

import functools
import re

from imgread.errors import UserError
from imgread.plugins import builtin_objects, by_name, entry_point_objects, name_problems
from imgread.storage.base import Opener
from imgread.storage.clients.base import Client, Endpoint

BUILTIN = (
    "imgread.storage.http.client:IMGREAD",
    "imgread.storage.clients.boto3_client:BOTO3",
    "imgread.storage.clients.obstore_client:OBSTORE",
    "imgread.storage.clients.s3torch_client:S3TORCH",
)
ENTRY_POINT_GROUP = "imgread.storage_clients"
DEFAULT = "imgread"  # kind http's own reader, what every session reads with unless told
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def check_client(client: object, where: str, entry_name: str | None = None) -> Client:
    """The contract a client must meet, checked when it loads (RuntimeError naming ``where``
    and every problem): a Client instance with a lower-case name (the entry point's, for a
    plug-in), a description, a non-empty tuple of kind names, and ``open`` or ``opener``."""
    if not isinstance(client, Client):
        raise RuntimeError(
            f"storage client {where} is {type(client).__name__}, not an instance of "
            "imgread.storage.clients.base.Client"
        )
    problems = name_problems(client.name, entry_name, _NAME)
    if not isinstance(client.description, str) or not client.description.strip():
        problems.append("no description (one line: the library and how it reads)")
    kinds = client.kinds
    if not isinstance(kinds, tuple) or not kinds or not all(isinstance(k, str) for k in kinds):
        problems.append(f"kinds {kinds!r} must be a non-empty tuple of storage kind names")
    cls = type(client)
    if cls.open is Client.open and cls.opener is Client.opener:
        problems.append("neither open(endpoint) nor opener(endpoint) is implemented")
    if problems:
        raise RuntimeError(
            f"storage client {where} breaks the storage client contract: {'; '.join(problems)}"
        )
    return client


@functools.cache
def clients() -> dict[str, Client]:
    """{name: client} of the built-in client and every registered one, each checked."""
    plugins = entry_point_objects(ENTRY_POINT_GROUP, "storage client")
    return by_name([*builtin_objects(BUILTIN), *plugins], check_client, "storage client")


def get_client(name: str, kind: str) -> Client:
    """The client ``name`` for a session of storage kind ``kind``; UserError naming the client
    where it is unknown, reads other kinds, or cannot run here."""
    known = clients()
    if name not in known:
        raise UserError(f"unknown storage client {name!r}; choose one of {', '.join(known)}")
    client = known[name]
    if kind not in client.kinds:
        raise UserError(
            f"storage client {name!r} reads storage of kind {', '.join(client.kinds)}, not {kind!r}"
        )
    why = client.missing()
    if why:
        raise UserError(f"storage client {name!r} cannot run here: {why}")
    return client


def opener_for(name: str, endpoint: Endpoint) -> Opener:
    """The opener client ``name`` reads ``endpoint`` through, checked to be an
    imgread.storage.base.Opener (TypeError naming the client otherwise)."""
    client = get_client(name, endpoint.kind)
    opener = client.opener(endpoint)
    if not isinstance(opener, Opener):
        raise TypeError(
            f"storage client {name!r}: opener() returned {type(opener).__name__}, not an "
            "imgread.storage.base.Opener"
        )
    return opener
