"""Kind ``volume``: a cloud volume capped in read bandwidth and IOPS, emulated on this disk.

The same files as ``local``, read the same way (buffered, through the page cache), by a trial
whose process runs in a cgroup that caps the reads of the dataset's block device: cgroup v1's
``blkio.throttle.read_bps_device`` and ``read_iops_device``, or cgroup v2's ``io.max``
(``MAJ:MIN rbps=N riops=N``), whichever the machine has. The caps count what reaches the
device: a cold buffered read is cut into IOs of up to ``read_ahead_kb`` (the file's size where
smaller), each counted once against ``read_iops``; a read served from the page cache is not
capped at all, as on a real volume.

Where the cgroup is made (``imgread-<pid>-<n>``; memcg's ``imgread-trial-<pid>`` is another):

- v1: at the root of the blkio hierarchy (a blkio throttle only counts on the whole disk, and
  the root is where no one else's limit applies); the other v1 hierarchies are untouched,
  unless one is mounted together with blkio.
- v2: beside the process's current cgroup, under its parent (so the limits of the parent and
  above, a SLURM job's or a systemd slice's, still apply), with ``+io`` written to the parent's
  ``cgroup.subtree_control`` where it is not there yet (left there: it limits nothing by
  itself). A process at the root gets a child of the root. v2 forbids a parent with processes
  of its own to enable controllers for its children: ``missing()`` says so.

``open`` writes the caps and then moves the *current* process (all its threads) into the
cgroup: the pools and DataLoader workers started afterwards inherit it, and so do fio and the
probe's threads, so the probe measures the very cap the trial reads under. ``close`` moves the
process back to the cgroup it was in, waits up to 5 s for the cgroup's last tasks (workers
being reaped) and removes it; ``sweep`` removes those of processes that died without closing.

The room's modules: ``kind`` (the registry's entry, :data:`KIND`, and the session), ``device``
(the disk and its read-ahead), ``cgroup`` (where the cgroup goes, the caps, what it served,
leftovers) and ``probe`` (fio or the O_DIRECT reader).
"""

from imgread.storage.volume.cgroup import (
    V1_BPS,
    V1_IOPS,
    Place,
    cgroup_of,
    place,
    served,
    throttle_lines,
)
from imgread.storage.volume.device import Device, block_device
from imgread.storage.volume.kind import KIND, VolumeKind, VolumeSession
from imgread.storage.volume.probe import fio_names, io_block, probe_direct, probe_with_fio

__all__ = [
    "KIND",
    "V1_BPS",
    "V1_IOPS",
    "Device",
    "Place",
    "VolumeKind",
    "VolumeSession",
    "block_device",
    "cgroup_of",
    "fio_names",
    "io_block",
    "place",
    "probe_direct",
    "probe_with_fio",
    "served",
    "throttle_lines",
]
