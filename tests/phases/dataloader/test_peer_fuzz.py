"""Hostile files for the libraries the peers decode with (issue: every pipeline library fuzzed):
torchvision.io, TensorFlow and DALI, each as its pipeline decodes one file, run in the sandbox
over a seeded sample of mutated JPEG, PNG and WebP files; each file decoded or refused naming
it, none taking the caller down; a library that does not import is said, never blamed on a file."""

from __future__ import annotations

from imgread.decoders import fuzz
from imgread.decoders.sandbox import BAD, check_files, summary

NAMES = [d.partition("=")[0] for d in fuzz.PIPELINE_DECODERS]


def test_every_pipeline_library_judges_every_mutated_file(tmp_path):
    count = 15  # three formats x five mutations
    outcomes = fuzz.run(
        tmp_path, count, 11, list(fuzz.PIPELINE_DECODERS), timeout_s=60, memory_bytes=4 << 30
    )
    by = summary(outcomes)
    assert set(by) == set(NAMES)
    for name, counts in by.items():
        assert sum(counts.values()) == count, name
        assert "unavailable" not in counts, f"{name} did not import in the sandbox: {counts}"
        assert counts.get("refused", 0) > 0, f"{name} refused none of {count} mutated files"
        assert counts.get("ok", 0) > 0, f"{name} decoded none of {count} files: {counts}"
    for o in outcomes:
        if o.status in BAD:
            assert o.path in o.message, o


def test_a_library_that_does_not_import_is_unavailable_not_a_refusal(tmp_path):
    toy = tmp_path / "noimport.py"
    toy.write_text("def decode(path, output):\n    import no_such_library_here\n")
    jpeg = next(p for p, fmt, _ in fuzz.make_files(tmp_path / "f", 3, 0) if fmt == "jpeg")
    (outcome,) = check_files([jpeg], ["noimport:decode"], env={"PYTHONPATH": str(tmp_path)})
    assert outcome.status == "unavailable" and not outcome.bad
    assert "no_such_library_here" in outcome.message
