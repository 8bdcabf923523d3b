"""What the S3 clients (boto3, obstore, s3torchconnector) find in a trial's environment: no
credentials, no config, no instance metadata, no proxy, so that they reach no address but the
session's endpoint and read nothing of the machine's.

:func:`isolate` is called once in the trial's process, when the client's opener is made
(before the variant starts its workers, which inherit the environment); the opener's close in
that process puts the environment back. Requests are unsigned and the endpoint an IP literal
with an explicit region, so nothing needs a credential, a DNS lookup or a region lookup; what
is set here keeps each SDK from looking anyway (boto3's and the CRT's credential chains, the
EC2 metadata endpoint at 169.254.169.254, ``~/.aws``).
"""

from __future__ import annotations

import os

from imgread.storage.clients.base import Endpoint

# Removed from the trial's environment: each would point an SDK at another address or at the
# machine's credentials and config (AWS_ENDPOINT_URL_S3, AWS_PROFILE, proxies, ...)
_DROP_PREFIXES = ("AWS_",)
_DROP = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def environment(endpoint: Endpoint) -> dict[str, str]:
    """The variables an S3 client's trial runs with (beside the removed ones)."""
    home = endpoint.sdk_home
    env = {
        "HOME": os.path.join(home, "home"),  # empty: no ~/.aws, no ~/.config
        "AWS_CONFIG_FILE": os.path.join(home, "empty.config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "empty.creds"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": endpoint.region,
        "AWS_DEFAULT_REGION": endpoint.region,
        "AWS_SKIP_SIGNATURE": "true",  # obstore's name for unsigned
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    if endpoint.cafile:  # TLS: the session's certificate is the CA bundle of every SDK
        env.update(AWS_CA_BUNDLE=endpoint.cafile, SSL_CERT_FILE=endpoint.cafile)
    return env


def _dropped(name: str) -> bool:
    return name in _DROP or name.startswith(_DROP_PREFIXES)


class Isolated:
    """The environment as it was before :func:`isolate`, to put back (:meth:`restore`) in the
    process that isolated it; a no-op elsewhere (a worker inherits the isolated one)."""

    def __init__(self, saved: dict[str, str | None]):
        self.saved, self.pid = saved, os.getpid()

    def restore(self) -> None:
        """Put the saved variables back (once, in the isolating process only)."""
        if os.getpid() != self.pid or self.saved is None:
            return
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.saved = None


def isolate(endpoint: Endpoint) -> Isolated:
    """Set the trial's environment for an S3 client (:func:`environment`, every ``AWS_*``
    and proxy variable removed first); the returned object puts it back. The folder
    ``sdk_home`` and its empty files are the session's (imgread.storage.http.session)."""
    if not endpoint.sdk_home:
        raise ValueError(
            f"storage {endpoint.profile}: the endpoint has no sdk_home; the S3 clients need "
            "the session's empty HOME and AWS config (a kind http session makes them)"
        )
    saved: dict[str, str | None] = {}
    for name in [n for n in os.environ if _dropped(n)]:
        saved[name] = os.environ.pop(name)
    for name, value in environment(endpoint).items():
        saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    return Isolated(saved)
