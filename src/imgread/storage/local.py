"""Kind ``local``: the files read where they are, as the study does (the default)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiofiles

from imgread.storage import base


def read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


class FileOpener(base.Opener):
    local_files = True  # readers may open the path themselves (a decoder given the path)

    """Blocking reads with open/read; asyncio reads with aiofiles (each a read in the loop's
    default thread pool), at most ``limit`` at once."""

    def read(self, path: str) -> bytes:
        return read_file(path)

    def async_reader(self, limit: int):
        return AsyncFiles(limit)


class AsyncFiles:
    def __init__(self, limit: int):
        self.gate = asyncio.Semaphore(limit) if limit else None

    async def _read(self, path: str) -> bytes:
        async with aiofiles.open(path, "rb") as fh:
            return await fh.read()

    async def read(self, path: str) -> bytes:
        if self.gate is None:
            return await self._read(path)
        async with self.gate:
            return await self._read(path)

    async def close(self) -> None:
        pass


class LocalSession(base.Session):
    def __init__(self):
        self.opener = FileOpener()


class LocalKind(base.Kind):
    name = "local"
    description = "the dataset's files on this machine's disk, read where they are (the study's)"
    needs = "nothing"

    def open(self, profile: base.Profile, root: Path) -> base.Session:
        return LocalSession()


KIND = LocalKind()
