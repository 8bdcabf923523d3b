"""What a trial's storage transport did over the clock (imgread.storage.base.Session.counts):
the change of its counters for the record, and a line for a failed trial's message."""

from __future__ import annotations


def transport_counts(before: dict | None, after: dict) -> dict:
    """The change of a session's counters (imgread.storage.base.Session.counts) from
    ``before`` (None: from the session's start): numbers subtracted; a breakdown ({reason:
    count}) subtracted key by key and written as text for the record (``"503:3 reset:2"``)."""
    out = {}
    for key, value in after.items():
        was = (before or {}).get(key)
        if isinstance(value, dict):
            left = {k: n - (was or {}).get(k, 0) for k, n in sorted(value.items())}
            out[key] = " ".join(f"{k}:{n}" for k, n in left.items() if n > 0)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value - (was or 0)
        else:
            out[key] = value
    return out


def transport_line(counts: dict | None) -> str:
    """``" (the transport: 3 retries (503:2 reset:1), 0.21 s of backoff, 1 failed read; the
    server injected 503 x 2, ...)"`` where something was retried or injected; "" otherwise."""
    if not counts:
        return ""
    parts = []
    if counts.get("retries") or counts.get("failed_reads"):
        parts.append(
            f"{counts.get('retries', 0)} retries ({counts.get('retry_reasons') or 'none'}), "
            f"{counts.get('retry_wait_seconds', 0.0):.2f} s of backoff, "
            f"{counts.get('failed_reads', 0)} read(s) failed for good"
        )
    injected = [
        f"{what} x {counts[key]}"
        for key, what in (
            ("faults_503", "503"),
            ("faults_reset", "reset"),
            ("faults_stall", "stall"),
            ("server_killed", "killed"),
        )
        if counts.get(key)
    ]
    if injected:
        parts.append(
            f"the server saw {counts.get('server_requests', 0)} requests and injected "
            + ", ".join(injected)
        )
    return f" (the transport: {'; '.join(parts)})" if parts else ""
