"""The s3torch-map pipeline: s3torchconnector's S3MapDataset in a real DataLoader, reading kind
http's emulated store through the library's own CRT reader: real trials cold at workers 0 and
2, every sample checked; the keys the library carries; local storage and TLS refused; the check
failing on a broken epoch; and, traced across the whole process tree (the DataLoader's workers
too), no address reached but the endpoint and no credential or config file of the machine's."""

from __future__ import annotations

import os
import shutil

import pytest

from imgread.errors import UserError, VerificationError
from imgread.phases.dataloader.pipelines.check import MAE_LIMIT, verify_peer
from imgread.phases.registry import get_phase
from imgread.storage import registry as storage
from imgread.storage.http.kind import KIND
from imgread.trial.run import TrialSpec, run_trial

from ...storage.test_s3_clients import _FORBIDDEN, _INET, _OPEN, _traced_trial
from ...support.helpers import segments

pytest.importorskip("torchvision")
pytest.importorskip("s3torchconnector")

from imgread.phases.dataloader.pipelines import s3torch_map  # noqa: E402

WHY = KIND.missing()
needs_kind = pytest.mark.skipif(WHY is not None, reason=f"kind http cannot run here: {WHY}")
QUICK = {"latency_ms": 1, "bandwidth_mbit": 10000, "backoff_ms": 5, "backoff_cap_ms": 40}
PARAMS = {"storage": "s3", "client": "s3torchconnector", "batch_size": "4"}
VARIANT = "s3torch-map"


def spec(manifest, n, workers, **settings) -> TrialSpec:
    params = {**PARAMS, "page_cache": "cold"}
    entry = {"name": "s3", "kind": "http", **QUICK, **settings}
    return TrialSpec(str(manifest), "dataloader", VARIANT, n, workers, params=params, storage=entry)


def _isolated_names() -> dict[str, str]:
    """The variables imgread.storage.clients.s3env sets or removes (cv2's import sets others)."""
    names = ("HOME", "NO_PROXY", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "SSL_CERT_FILE")
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in names}


@needs_kind
@pytest.mark.parametrize("workers", [0, 2])
def test_a_cold_epoch_from_the_store_is_every_sample_checked(small_dataset, workers):
    before, env = segments(), _isolated_names()
    d = run_trial(spec(small_dataset, 10, workers)).to_dict()
    assert d["images"] == 10 and d["samples_unique"] == 10 and d["output_pixels"] == 10 * 224**2
    assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    assert d["pixel_mae_max"] <= 1.0 and d["pixel_mae_limit"] == MAE_LIMIT  # measured: 0.45
    assert d["batches"] == 3 and 0 < d["first_batch_seconds"] <= d["seconds"]
    assert d["client"] == d["storage_client"] == "s3torchconnector"
    assert d["client_version"].startswith("s3torchconnector ")
    assert d["pipeline_versions"].startswith("s3torchconnector==")
    assert d["s3torchconnector"] in d["pipeline_versions"]
    assert "unsigned=True, force_path_style=True, max_attempts=3" in d["s3torch_client_config"]
    assert d["s3torch_endpoint"].startswith(f"http://{d['storage_address']} region ")
    assert d["pipeline_decoder"].startswith("PIL") and "Normalize" in d["pipeline_transform"]
    assert d["torch_threads"] == 1 and d["worker_torch_threads"] == (1 if workers else 0)
    assert (d["peak_rss_workers_bytes"] > 0) == (workers > 0)
    assert segments() == before and _isolated_names() == env  # the environment put back


@needs_kind
def test_the_keys_are_the_librarys_and_the_check_fails_on_a_broken_epoch(small_dataset):
    phase = get_phase("dataloader")
    ctx = phase.context(small_dataset, 6, VARIANT, 0, PARAMS)
    with storage.session(KIND.check("s3", QUICK), ctx.root, "s3torchconnector") as (s, _):
        ctx = ctx.with_opener(s.opener)
        runner = s3torch_map.S3MapRunner(ctx)
        try:
            runner.sampler.indices = [5, 3, 1, 0, 2, 4]  # the library's keys follow its reads
            batches = runner.run(ctx.jobs)
        finally:
            runner.close()
    assert [list(map(int, b[2])) for b in batches] == [[5, 3, 1, 0], [2, 4]]
    assert verify_peer(ctx, batches, VARIANT).images == 6
    images, labels, keys = batches[-1]
    with pytest.raises(VerificationError, match="4 samples for 6 images: 0 came more than once"):
        verify_peer(ctx, batches[:-1], VARIANT)
    swapped = [batches[0], (images, labels, keys.flip(0))]
    with pytest.raises(VerificationError):
        verify_peer(ctx, swapped, VARIANT)


def test_local_storage_and_other_clients_are_left_out(small_dataset):
    phase = get_phase("dataloader")
    local = phase.resolve({})
    assert "takes client s3torchconnector" in phase.unsupported(VARIANT, local)
    own = phase.resolve({"client": "s3torchconnector"})
    assert "reads an object store" in phase.unsupported(VARIANT, own)
    remote = phase.resolve({"storage": "s3", "client": "boto3"})
    assert phase.redundant(VARIANT, remote)
    assert phase.unsupported(VARIANT, {**remote, "client": "s3torchconnector"}) is None
    ctx = phase.context(small_dataset, 4, VARIANT, 0, {"batch_size": "2"})
    with pytest.raises(UserError, match="give it an http storage profile"):
        s3torch_map.S3MapRunner(ctx)


@needs_kind
def test_a_tls_profile_is_refused_with_one_line(small_dataset):
    with pytest.raises(UserError, match="trust only the session's certificate"):
        run_trial(spec(small_dataset, 4, 0, tls=True))


@needs_kind
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_no_worker_reaches_another_address_or_reads_the_machines_credentials(
    small_dataset, tmp_path
):
    record, trace = _traced_trial(spec(small_dataset, 8, 2), tmp_path)
    assert record["images"] == 8 and record["samples_unique"] == 8
    host, port = record["storage_address"].rsplit(":", 1)
    lines = trace.splitlines()
    found = [(line.split()[0], m) for line in lines if (m := _INET.search(line))]
    reached = {(m.group(4) or m.group(5), m.group(3)) for _, m in found}
    assert reached == {(host, port)}, f"reached {sorted(reached)}, not only {host}:{port}"
    # the DataLoader's two workers read, each through its own client (the trial's process
    # itself connects only for the session's probe)
    assert len({pid for pid, _ in found} - {lines[0].split()[0]}) >= 2
    opened = {m.group(1) for m in map(_OPEN.search, trace.splitlines()) if m}
    forbidden = sorted(p for p in opened if _FORBIDDEN.search(p))
    assert not forbidden, f"opened the machine's credentials or config: {forbidden}"
