"""Kind ``http``: an object store over a network, emulated on this machine.

The dataset's folder is served by a real nginx inside a network namespace the session makes,
reached from the trial through a veth pair whose server-to-client direction is capped by
``tc tbf`` at the profile's bandwidth; nginx's echo module holds each request for the profile's
latency (``echo_sleep``) before the file is sent (``echo_exec`` to a named location). The
kernel has no netem here, and a sleep in the server is what a remote store's time to first
byte is made of anyway. Readers fetch ``GET /<path under the dataset root>`` over keep-alive
HTTP/1.1 (http.client per thread and process; aiohttp for asyncio), optionally over TLS with a
certificate the session makes and the client trusts alone (verification is never turned off).

Everything is made before the trial's clock and torn down after it (``close``), on every way
out; a killed trial's leftovers are named after its pid and removed by ``sweep``
(imgread.storage.http.netns).

Cold cache: the server runs on this kernel, so its page cache is the host's. The trial's
cold-cache proof on the dataset's files (evicted, then checked with mincore) therefore covers
what nginx reads too: nothing is served from memory that the proof did not see. The probe's own
files live in the session's temporary folder (on /dev/shm where there is one), so the probe
measures the network and the server, not a disk.

The room's modules: ``kind`` (the registry's entry, :data:`KIND`), ``session`` (one trial's
server), ``server`` (what it needs, nginx.conf, the certificate), ``launch`` (the processes),
``client`` (the built-in reader, storage client ``imgread``), ``retry`` (the policy and its
counts), ``netns`` (namespaces, veth pairs, tc) and ``faultproxy`` (the injected faults).
"""

from imgread.storage.http.client import AsyncHttpReader, HttpOpener
from imgread.storage.http.kind import KIND, HttpKind
from imgread.storage.http.retry import ReadFailed, RetryPolicy, read_retry_log
from imgread.storage.http.server import has_faults, nginx_config
from imgread.storage.http.session import HttpSession

__all__ = [
    "KIND",
    "AsyncHttpReader",
    "HttpKind",
    "HttpOpener",
    "HttpSession",
    "ReadFailed",
    "RetryPolicy",
    "has_faults",
    "nginx_config",
    "read_retry_log",
]
