"""The storage client ``s3torchconnector``: Amazon's S3 connector for PyTorch (the Mountpoint
S3 client, AWS CRT underneath), its ``S3Client`` reading each object whole with
``get_object(bucket, key).read()``, one per process (it makes a fresh CRT client in a forked
child itself), unsigned, path style, the session's endpoint and an explicit region.

It has no asyncio API: the asyncio readers run its blocking reads in a thread pool (the
contract's default). Retries: the CRT's (``max_attempts`` = the profile's retries + 1, its own
backoff, not configurable), not reported, so counted at the fault proxy. TLS: the CRT trusts
the system's store and cannot be told to trust only the session's certificate, so a TLS
profile refuses this client (never verification turned off). The DataLoader's own route,
``S3MapDataset.from_objects`` in a DataLoader, is docs/storage-clients.md's."""

from __future__ import annotations

from typing import Any

from imgread.errors import UserError
from imgread.storage.clients.base import Endpoint
from imgread.storage.clients.s3base import S3Client


class S3TorchClient(S3Client):
    """s3torchconnector's S3Client, one per process (see the module's docstring)."""

    name = "s3torchconnector"
    description = "s3torchconnector S3Client (Mountpoint, AWS CRT), unsigned, path style"
    module = "s3torchconnector"
    package = "s3torchconnector"
    retries_counted = "proxy"

    def config(self, endpoint: Endpoint):
        """The S3ClientConfig: unsigned, path style, the profile's attempts."""
        from s3torchconnector import S3ClientConfig

        return S3ClientConfig(
            unsigned=True, force_path_style=True, max_attempts=endpoint.policy.retries + 1
        )

    def settings(self, endpoint: Endpoint) -> dict[str, Any]:
        """s3torchconnector's version and retry settings, for the record."""
        return {
            "client_version": f"s3torchconnector {self.version()}",
            "client_retries": f"CRT max_attempts {endpoint.policy.retries + 1} "
            "(counted at the fault proxy)",
            "client_pool": "one S3Client per process (the CRT's pool)",
        }

    def opener(self, endpoint: Endpoint):
        """The S3Opener; UserError for a TLS endpoint (see the module's docstring)."""
        if endpoint.cafile:
            raise UserError(
                f"storage {endpoint.profile}: storage client s3torchconnector cannot be told to "
                "trust only the session's certificate (the CRT uses the system's store); use "
                "a profile with tls: false for it"
            )
        return super().opener(endpoint)

    def make(self, endpoint: Endpoint, pool: int) -> Any:
        """This process's S3Client (thread-safe; the CRT pools its connections)."""
        from s3torchconnector._s3client import S3Client as TorchS3Client

        return TorchS3Client(
            endpoint.region, endpoint=endpoint.base_url, s3client_config=self.config(endpoint)
        )

    def get(self, handle: Any, endpoint: Endpoint, key: str) -> bytes:
        """The object's bytes."""
        try:
            return handle.get_object(endpoint.bucket, key).read()
        except Exception as exc:  # S3Exception is the CRT's own class, not OSError
            text = str(exc)
            if "NoSuchKey" in text or "404" in text or "not found" in text.lower():
                raise FileNotFoundError(f"s3torchconnector: no object {key!r}: {text}") from exc
            endpoint.note("fail", type(exc).__name__, 0.0)
            raise OSError(
                f"s3torchconnector: GET {endpoint.base_url}/{endpoint.bucket}/{key}: {text}"
            ) from exc


S3TORCH = S3TorchClient()
