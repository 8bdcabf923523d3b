"""The simulated accelerator of the DataLoader phase (grid key accel_rate): its consumer on a
fake batch stream (the sleeps counted, AU computed), the search's goal and bracket, and a
real trial of the cheapest peer pipeline (torchvision-io) honouring it."""

from __future__ import annotations

import math

import pytest

from imgread.dataset import generate
from imgread.phases.dataloader.pipelines.consumer import ACCEL_SEARCH, Consumer, scale
from imgread.phases.registry import get_phase
from imgread.plan.grid import path_params
from imgread.trial.run import TrialSpec, run_trial

from ...support.helpers import SMALL


class FakeClock:
    """A clock that only the fake sleep and the test move."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_consumer_sleeps_samples_over_rate_after_each_batch_and_computes_au():
    clock = FakeClock()
    consumer = Consumer(100.0, sleep=clock.sleep, clock=clock)
    batches = [(None, [0] * 10)] * 4 + [(None, [0] * 5)]  # 45 samples, the last batch short
    seen = []
    with consumer.epoch():
        for _batch in consumer.feed(iter(batches), lambda b: len(b[1])):
            seen.append(consumer.busy)  # the step comes after the caller handled the batch
            clock.now += 0.05  # the pipeline's own time for the next batch
    assert seen[0] == 0 and seen[1] == pytest.approx(0.1)
    fields = consumer.fields()
    assert fields["accel_busy_seconds"] == pytest.approx(0.45)
    assert fields["accel_batches"] == 5
    assert fields["au"] == pytest.approx(0.45 / (0.45 + 5 * 0.05))


def test_no_consumer_and_a_warm_up_outside_the_epoch_sleep_nothing():
    clock = FakeClock()
    consumer = Consumer(50.0, sleep=clock.sleep, clock=clock)
    consumer.step(10)  # a warm-up batch: outside the epoch
    assert clock.now == 0
    none = Consumer.of({"accel_rate": "0"})
    with none.epoch():
        none.step(10)
    assert none.busy == 0 and math.isnan(none.fields()["au"])
    with pytest.raises(ValueError, match="accel_rate"):
        Consumer(-1)


def test_the_search_key_brackets_from_the_unloaded_rate_and_passes_at_90_percent():
    assert ACCEL_SEARCH.first == 0
    assert ACCEL_SEARCH.bounds({"images_per_s": 320.0}) == (10.0, 320.0)
    assert ACCEL_SEARCH.goal({"au": 0.93}).ok and not ACCEL_SEARCH.goal({"au": 0.89}).ok
    assert not ACCEL_SEARCH.goal({"au": float("nan")}).ok
    assert get_phase("dataloader").search_keys["accel_rate"] is ACCEL_SEARCH
    assert get_phase("load").search_keys == {}


def test_the_scale_states_the_rate_as_a_share_of_each_accelerator_profile():
    out = scale(178.6, [{"name": "h100", "batch_size": 400, "step_s": 0.224}])
    assert out["of_accelerators"]["h100"] == pytest.approx(0.1, rel=1e-3)
    assert "178.6" not in out["line"] and "179 images/s" in out["line"] and "10.0%" in out["line"]
    assert scale(100, None)["of_accelerators"] == {}  # no accelerators: the rate alone
    assert scale(None, None)["line"] == "no simulated accelerator rate passed"


def test_accel_rate_at_its_default_is_left_out_of_a_cells_path():
    phase = get_phase("dataloader")
    params = phase.resolve({})
    assert params["accel_rate"] == "0" and "accel_rate" not in path_params(phase, params)
    assert path_params(phase, {**params, "accel_rate": "120"})["accel_rate"] == "120"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("accel") / "ds", SMALL, progress=False)


def test_a_peer_pipeline_honours_accel_rate_in_a_trial(dataset):
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    params = {"batch_size": 4, "page_cache": "warm", "accel_rate": "40"}
    d = run_trial(TrialSpec(str(dataset), "dataloader", "torchvision-io", 8, 0, params=params))
    d = d.to_dict()
    assert d["accel_rate"] == "40" and d["accel_batches"] == 2
    # 8 samples at 40 images/s: 0.2 s slept, inside the timed epoch
    assert d["accel_busy_seconds"] == pytest.approx(0.2, abs=0.05)
    assert d["seconds"] >= d["accel_busy_seconds"]
    assert 0 < d["au"] <= 1 and d["au"] == pytest.approx(
        d["accel_busy_seconds"] / d["seconds"], rel=0.05
    )
