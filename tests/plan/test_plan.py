"""imgread.plan: the grid a config expands to (never asking the machine), what each cell
needs, the storage check and its skip records, and what a run says at its end."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
import yaml
from snakemake.utils import update_config, validate

from imgread.errors import UserError
from imgread.plan import inputs, run
from imgread.plan import storage as plan_storage
from imgread.plan.checks import check_config
from imgread.plan.grid import normalize_datasets, skipped_cells, trial_grid, used_storage
from imgread.plan.schema import check_schema, schema_file
from imgread.storage import registry

from ..support.helpers import ROOT

SCHEMA = ROOT / "config" / "schema.yaml"


def study(*overlays: str, override: dict | None = None) -> dict:
    """config.yaml with the overlays merged as Snakemake merges --configfile, checked and with
    the schema's defaults, as common.smk leaves it."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in overlays:
        update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    update_config(config, override or {})
    normalize_datasets(config)
    check_schema(config, SCHEMA)
    validate(config, schema_file(SCHEMA), set_default=True)
    check_config(config)
    return config


@pytest.fixture
def no_machine(monkeypatch):
    """Every storage kind's check fails the test if asked (it runs commands)."""

    def asked(self):
        raise AssertionError(f"storage kind {self.name} asked while planning")

    for kind in registry.KINDS.values():
        monkeypatch.setattr(type(kind), "missing", asked)


def test_the_grid_never_asks_the_machine_and_keeps_every_storage_cell(no_machine):
    config = study("smoke.yaml", "smoke-storage.yaml")
    grid = trial_grid(config)
    on = Counter(dict(c.params).get("storage") for c in grid)
    assert set(on) >= {"local", "smoke-volume", "smoke-http", "smoke-failing"}
    assert on["smoke-http"] > 0 and on["smoke-volume"] > 0
    assert plan_storage.checked_profiles(config) == ["smoke-failing", "smoke-http", "smoke-volume"]
    assert used_storage(config) == {"local", *plan_storage.checked_profiles(config)}


def test_the_grid_is_the_same_whatever_a_kind_would_say(monkeypatch):
    config = study("smoke.yaml", "smoke-storage.yaml")
    for kind in registry.KINDS.values():
        monkeypatch.setattr(type(kind), "missing", lambda self: "not on this machine")
    nothing = trial_grid(config)
    monkeypatch.undo()
    for kind in registry.KINDS.values():
        monkeypatch.setattr(type(kind), "missing", lambda self: None)
    assert trial_grid(config) == nothing


def test_the_smoke_grid_has_its_cells_once_each():
    grid = trial_grid(study("smoke.yaml"))
    assert len(grid) == len(set(grid))
    decode = [c for c in grid if c.phase == "decode" and c.variant == "sequential"]
    # the first block: 2 sizes x 2 repetitions; the second: 4 decoders x 2 outputs x 2
    # deliveries at 4 images once, less pillow-draft at full (2) and the first block's cell
    assert len(decode) == 4 + (16 - 2 - 1)
    assert all(c.dataset == "smoke" and c.machine == "" for c in grid)


def test_undecodable_cells_are_left_out_and_said_once(tmp_path):
    config = study(
        "smoke.yaml",
        override={
            "datasets": [{"name": "smoke", "count": 8, "format": "png"}],
            "phases": {"decode": {"sequential": [{"workers": [1], "decoder": ["simplejpeg"]}]}},
        },
    )
    lines = skipped_cells(config)
    assert any("decoder simplejpeg on dataset smoke (png)" in line for line in lines)
    assert not [c for c in trial_grid(config) if dict(c.params).get("decoder") == "simplejpeg"]


def test_a_decoder_is_checked_against_the_registry_not_a_schema_list():
    bad = {"phases": {"decode": {"sequential": [{"workers": [1], "decoder": ["libjpeg"]}]}}}
    with pytest.raises(UserError) as err:
        study("smoke.yaml", override=bad)
    message = str(err.value)
    assert message.startswith("config 'phases.decode.sequential[0].decoder': unknown decoder")
    assert "'libjpeg'" in message and "pillow, pillow-draft, opencv" in message
    assert "\n" not in message
    schema = yaml.safe_load(SCHEMA.read_text())
    assert "enum" not in json.dumps(schema["$defs"]["decodeBlock"]["properties"]["decoder"])


# --------------------------------------------------------------------------- inputs


def test_each_cell_needs_its_reference_and_cache_at_the_largest_n():
    grid = trial_grid(study("smoke.yaml"))
    refs = {inputs.reference_of(c.phase, dict(c.params)) for c in grid} - {None}
    assert ("simplejpeg", "crop224") in refs
    assert inputs.reference_size(grid, "smoke", "simplejpeg", "crop224") == 8
    assert inputs.reference_size(grid, "smoke", "nosuch", "full") == 1
    assert inputs.decoded_caches(grid) == [("smoke", "simplejpeg")]
    assert inputs.cache_size(grid, "smoke", "simplejpeg") == 8


def test_cold_cells_flush_and_group_apart_on_a_cluster():
    config = study("smoke.yaml")
    cold = {"storage": "local", "in_flight": "0", "shard_mb": "0"}
    assert inputs.is_cold("load", cold)
    assert inputs.cache_settings(config, "load", cold) == config["cache"]
    warm = {"decoder": "pillow"}
    assert inputs.cache_settings(config, "decode", warm) == {"method": "warm-read"}
    assert inputs.trial_group(config, "load", cold) == "trials-cold"
    assert inputs.trial_group(config, "decode", warm, "gpu") == "trials-warm-on-gpu"
    staged = {**config, "cluster": {**config["cluster"], "stage_dataset": True}}
    assert inputs.trial_group(staged, "load", cold) == "trials-warm"
    settings = inputs.cache_settings(staged, "load", cold)
    assert (
        settings["stage_dataset"] is True
        and settings["stage_dir"] == (config["cluster"]["stage_dir"])
    )
    assert inputs.shard_mb({"shard_mb": "16"}) == 16 and inputs.shard_mb({}) == 0


def test_the_datasets_made_and_measured_are_those_read():
    grid = trial_grid(study("smoke.yaml"))
    assert inputs.used_datasets(["smoke", "spare"], "smoke", grid) == ["smoke"]
    assert inputs.ceiling_datasets(["other", "smoke"], "smoke", grid) == ["smoke"]
    assert inputs.trial_log("results/trials/smoke/load/x/n4_w1_r0.json") == (
        "results/logs/trials/smoke/load/x/n4_w1_r0.log"
    )


# --------------------------------------------------------------------------- storage


def test_a_check_that_finds_a_kind_missing_makes_skip_records_the_tables_leave_out(
    monkeypatch, tmp_path
):
    http = type(registry.KINDS["http"])
    monkeypatch.setattr(http, "missing", lambda self: "nginx is not installed")
    check = plan_storage.check_profile({"name": "smoke-http", "kind": "http"})
    assert check == {
        "profile": "smoke-http",
        "kind": "http",
        "missing": "nginx is not installed",
        "line": "smoke-http (http) not measured: nginx is not installed",
    }
    plan_storage.write_check(tmp_path / "check.json", check)
    assert plan_storage.read_check(tmp_path / "check.json") == check
    skip, measured = tmp_path / "skip.json", tmp_path / "measured.json"
    skip.write_text(json.dumps(plan_storage.skip_record(check)))
    measured.write_text(json.dumps({"phase": "load", "seconds": 1.0, "note": "skipped"}))
    kept, lines = plan_storage.split_records([str(skip), str(measured), str(skip)])
    assert kept == [str(measured)]
    assert lines == [check["line"]]  # once, worded as skipped_storage words it
    config = study("smoke.yaml", "smoke-storage.yaml")
    assert plan_storage.skipped_storage(config)["smoke-http"] == check["line"]


def test_a_kind_that_can_run_here_gives_no_line(monkeypatch):
    monkeypatch.setattr(type(registry.KINDS["volume"]), "missing", lambda self: None)
    check = plan_storage.check_profile({"name": "v", "kind": "volume"})
    assert check["missing"] is None and check["line"] is None
    assert plan_storage.needs_check({"storage": "v"}) == "v"
    assert plan_storage.needs_check({"storage": "local"}) is None
    assert plan_storage.needs_check({"decoder": "pillow"}) is None


def test_the_machine_key_changes_with_what_the_kinds_read(monkeypatch):
    monkeypatch.delenv("IMGREAD_NGINX", raising=False)
    before = plan_storage.machine_key()
    monkeypatch.setenv("IMGREAD_NGINX", "/nowhere/nginx")
    after = plan_storage.machine_key()
    assert before != after and after["env"]["IMGREAD_NGINX"] == "/nowhere/nginx"
    monkeypatch.setenv("IMGREAD_MEMORY", "x")  # read by no storage kind
    assert plan_storage.machine_key() == after


# --------------------------------------------------------------------------- run


def test_a_failed_run_names_the_newest_failed_logs_with_their_tails(tmp_path):
    logs = tmp_path / "logs"
    (logs / "trials").mkdir(parents=True)
    since = time.time() - 10
    old = logs / "old.log"
    old.write_text("Traceback: an earlier run's\n")
    os.utime(old, (since - 100, since - 100))
    (logs / "fine.log").write_text("all good\n")
    for i in range(4):
        log = logs / "trials" / f"t{i}.log"
        log.write_text("\n".join(f"line {k}" for k in range(20)) + f"\nError in trial {i}\n")
        os.utime(log, (since + i, since + i))
    report = run.failure_report(logs, since)
    assert len(report) == run.LAST_LOGS
    named = [str(logs / "trials" / f"t{i}.log") for i in (1, 2, 3)]
    assert all(f"its log {log} ends with" in r for log, r in zip(named, report, strict=True))
    assert report[-1].endswith("Error in trial 3") and "line 8" not in report[-1]
    assert "line 9" in report[-1]  # the last 12 lines
    assert run.failure_report(tmp_path / "empty", since) == [
        "imgread: the run failed; see the log above and results/logs/"
    ]


def test_the_report_guard_refuses_another_configs_tables(tmp_path):
    config = study("smoke.yaml")
    path = tmp_path / "study.json"
    assert run.report_mismatch(config, path, "smoke", 10) is None  # no tables yet
    from imgread.answer.study import config_digest

    path.write_text(json.dumps({"config_digest": config_digest(config)}))
    assert run.report_mismatch(config, path, "smoke", 10) is None
    path.write_text(json.dumps({"config_digest": "x", "dataset": {"name": "big"}, "trials": 3}))
    why = run.report_mismatch(config, path, "smoke", 10)
    assert "(dataset big, 3 trials) than this one (dataset smoke, 10 trials planned)" in why


def test_the_answer_is_printed_only_where_the_run_wrote_it(tmp_path):
    assert run.recommendation(tmp_path / "none.md") is None
    (tmp_path / "rec.md").write_text("| load | threads |\n")
    assert run.recommendation(tmp_path / "rec.md").endswith("| load | threads |\n")


def test_the_console_prints_the_answer_and_leaves_the_code_to_paste_in_its_file(tmp_path):
    import pandas as pd

    from imgread.answer.snippets import markdown_blocks

    row = dict(phase="load", variant="threads", workers=4, settings="-", job="-", dataset="d")
    code = markdown_blocks(pd.DataFrame([row]))
    assert code.lstrip().startswith(run.CODE_HEADING)  # the heading the console cuts at
    (tmp_path / "rec.md").write_text("Use threads.\n\n| load | threads |\n" + code)
    printed = run.recommendation(tmp_path / "rec.md")
    assert "| load | threads |" in printed and "```" not in printed
    assert printed.rstrip().endswith(f"'Code to paste' of {tmp_path / 'rec.md'}.")
