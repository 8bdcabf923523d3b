"""What a trial's processes hold, read from /proc (imgread.instruments.memory's sampled way): each
process's proportional share of its anonymous memory and its page tables, and the shared memory
the trial uses, each page once.

PSS counts a shared-memory page only where a process has it in its page tables; a shared-memory
file keeps its pages while anyone holds it open or maps it, touched or not (PyTorch hands a
batch over as a deleted /dev/shm file, which the receiver maps without touching all of it). So
a shared-memory file the trial uses (holds open, or maps where its size can be read) counts by
the pages it has allocated, in place of its mappings' PSS, once however many processes use it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import stat
from functools import cache
from pathlib import Path

PROC = Path("/proc")
SHM = Path("/dev/shm")
SHARED = (f"{SHM}/", "/memfd:")  # where shared memory lives, as /proc links name it
_PSS = re.compile(rb"^(Pss|Pss_Anon|Pss_Shmem):\s+(\d+) kB", re.MULTILINE)
_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272}.get(platform.machine())
_KCMP_VM = 1
SMAPS_WORTH_BYTES = 1 << 20  # shared-memory files mapped: below this in all, PSS is near enough


def pss_bytes(pid: int) -> int | None:
    """The process's proportional set size of anonymous and shared memory (smaps_rollup's
    Pss_Anon + Pss_Shmem; all of Pss where the kernel has no split); None where it is gone."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    kb = {k: int(v) for k, v in _PSS.findall(text)}
    if b"Pss_Anon" in kb:
        return (kb[b"Pss_Anon"] + kb.get(b"Pss_Shmem", 0)) * 1024
    return kb[b"Pss"] * 1024 if b"Pss" in kb else None


def page_table_bytes(pid: int) -> int:
    """The process's page tables (VmPTE of /proc/<pid>/status): kernel memory, its own."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmPTE:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def process_memory(pid: int) -> int | None:
    """What the meter counts of one process: :func:`pss_bytes` + its page tables."""
    pss = pss_bytes(pid)
    return None if pss is None else pss + page_table_bytes(pid)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, made by any of its threads."""
    kids: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return kids
    for task in tasks:
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return kids


def same_memory(a: int, b: int) -> bool:
    """True where processes ``a`` and ``b`` share one address space (a vfork child before its
    exec): kcmp(2), where the kernel has it."""
    if _KCMP is None:
        return False
    return _libc().syscall(_KCMP, a, b, _KCMP_VM, 0, 0) == 0


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, each address space once (a child sharing its parent's, as
    between vfork and exec, left out)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(k for k in children(p) if not same_memory(p, k))
    return tree


def shm_segments() -> dict[tuple[str, int], int]:
    """{(name, inode): bytes allocated} of every file in /dev/shm."""
    out = {}
    try:
        entries = list(os.scandir(SHM))
    except OSError:
        return out
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        out[(e.name, st.st_ino)] = st.st_blocks * 512
    return out


def held_shared(pids: list[int]) -> tuple[dict[int, int], set[str]]:
    """The shared-memory files (on /dev/shm, or memfds) the processes hold open: ({inode:
    bytes allocated}, their names)."""
    held, names = {}, set()
    for pid in pids:
        folder = PROC / str(pid) / "fd"
        try:
            fds = os.listdir(folder)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(folder / fd)
                st = os.stat(folder / fd) if target.startswith(SHARED) else None
            except OSError:
                continue  # closed meanwhile
            if st is not None and stat.S_ISREG(st.st_mode):
                held[st.st_ino] = st.st_blocks * 512
                names.add(_name(target))
    return held, names


def shm_mappings(pid: int, with_pss: bool) -> list[tuple[int, str, int]]:
    """(inode, path, PSS in bytes: 0 without ``with_pss``) of each mapping of a shared-memory
    file in the process (maps; smaps, which costs a walk of its page tables, ``with_pss``)."""
    try:
        text = (PROC / str(pid) / ("smaps" if with_pss else "maps")).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    out, current = [], None
    for line in text.splitlines():
        if with_pss and line.startswith("Pss:"):
            if current is not None:
                out.append((*current, int(line.split()[1]) * 1024))
            current = None
            continue
        parts = line.split(maxsplit=5)
        if parts and not parts[0].endswith(":"):  # a mapping's first line
            shared = len(parts) == 6 and parts[5].startswith(SHARED)
            current = (int(parts[4]), parts[5]) if shared else None
            if current is not None and not with_pss:
                out.append((*current, 0))
    return out


def _size(path: str, inode: int) -> int | None:
    """Bytes allocated to a /dev/shm file still named ``path``; None where it is not."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # deleted: only a descriptor on it could say (held_shared)
    return st.st_blocks * 512 if st.st_ino == inode else None


def _name(path: str) -> str:
    return path.removesuffix(" (deleted)").rpartition("/")[2]


def tree_memory(pid: int, before: dict[tuple[str, int], int], seen: set[str]) -> int:
    """What ``pid``'s tree holds: :func:`process_memory` of each process, the shared-memory
    files it uses by their allocated pages in place of their mappings' PSS (module
    docstring), and the /dev/shm segments not in ``before`` that none of it uses now but that
    it used before (``seen``: in transit between its processes; another program's are not)."""
    pids = process_tree(pid)
    total = sum(filter(None, (process_memory(p) for p in pids)))
    held, names = held_shared(pids)
    new = {k: b for k, b in shm_segments().items() if k not in before}
    if not held and not new:
        return total  # no shared-memory file in sight: no maps to read
    maps = {p: shm_mappings(p, with_pss=False) for p in pids}
    mapped = {inode for m in maps.values() for inode, _, _ in m}
    seen |= names | {_name(path) for m in maps.values() for _, path, _ in m}
    sizes = dict(held)
    for inode, path, _ in (v for m in maps.values() for v in m):
        if inode not in sizes and (size := _size(path, inode)) is not None:
            sizes[inode] = size
    replace = {inode: b for inode, b in sizes.items() if inode in mapped}
    if sum(replace.values()) < SMAPS_WORTH_BYTES:
        replace = {}  # a few small files (semaphores, a heap arena): their PSS is near enough
    for p, m in maps.items():
        if any(inode in replace for inode, _, _ in m):
            total -= sum(b for inode, _, b in shm_mappings(p, with_pss=True) if inode in replace)
    unmapped = sum(b for inode, b in held.items() if inode not in mapped)
    known = sizes.keys() | mapped
    in_transit = sum(b for (name, inode), b in new.items() if name in seen and inode not in known)
    return total + sum(replace.values()) + unmapped + in_transit
