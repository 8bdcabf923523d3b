"""The claim "adding a decoder is one module": a decoder written outside the package (the toy
module below, written into a temporary folder beside a dist-info with its ``imgread.decoders``
entry point, what ``pip install`` writes) is registered, decodes a real JPEG to Pillow's pixels
through ``get_decoder(name)``, and runs a real decode trial; a broken one is refused, named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from imgread.decoders import registry
from imgread.decoders.base import jpeg_only, make_decoder
from imgread.errors import UserError

from ..support.helpers import install_plugin, run_trial_cli

TOY = '''
"""A decoder from outside imgread: Pillow's incremental parser, fed the file 4 KiB at a time."""

import numpy as np

from imgread.decoders.base import (
    JPEG_ONLY, SNIFF_BYTES, finish, jpeg_only, make_decoder, require_format, sniff, source_bytes,
)


def decode(src, output):
    from PIL import ImageFile

    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), JPEG_ONLY)  # UnsupportedFormatError otherwise
    parser = ImageFile.Parser()
    for start in range(0, len(data), 4096):
        parser.feed(data[start : start + 4096])
    with parser.close() as img:
        return finish(np.asarray(img.convert("RGB")), output)


def version():
    import PIL

    return f"toy 0.1 (Pillow {PIL.__version__})"


TOY = make_decoder("toy", decode, version, jpeg_only, "Pillow's ImageFile.Parser, 4 KiB a feed")
NO_DECODE = make_decoder("nodecode", None, version, jpeg_only, "")
CLASH = make_decoder("pillow", decode, version, jpeg_only, "a second pillow")
NOT_A_DECODER = decode
'''


def _plugin(root: Path, *entry_points: str) -> Path:
    """The toy module and a ``toydecoder-0.1.dist-info`` naming ``entry_points`` in ``root``."""
    return install_plugin(root, "toydecoder", TOY, "imgread.decoders", *entry_points)


def _python(plugin_dir: Path, code: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _jpegs(small_dataset: Path) -> list[str]:
    return sorted(str(p) for p in small_dataset.parent.rglob("*.jpg"))[:3]


def test_a_decoder_from_outside_decodes_a_real_jpeg_to_pillows_pixels(small_dataset, tmp_path):
    plugin = _plugin(tmp_path / "plugin", "toy = toydecoder:TOY")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    code = f"""
        import json
        import numpy as np
        from PIL import Image
        from imgread.decoders import DECODERS, can_decode, get_decoder, versions, warm_up
        from imgread.decoders import UnsupportedFormatError
        from imgread.phases.registry import PHASES

        paths, same, shapes = {_jpegs(small_dataset)!r}, [], []
        warm_up("toy", "full")
        toy = get_decoder("toy")  # what every phase calls, in its workers too
        for path in paths:
            want = np.asarray(Image.open(path).convert("RGB"))
            got = toy.decode(path, "full")
            into = np.empty_like(want)
            toy.decode_into(path, "full", into)
            crop = toy.decode(open(path, "rb").read(), "crop224")
            same.append(
                np.array_equal(got, want) and np.array_equal(into, want)
                and np.array_equal(crop, DECODERS["pillow"].decode(path, "crop224"))
            )
            shapes.append([list(got.shape), list(crop.shape)])
        try:
            toy.decode({str(tmp_path / "photo.png")!r})
            refused = None
        except UnsupportedFormatError as exc:
            refused = str(exc)
        choices = {{
            name: [p.choices for p in phase.params if p.name == "decoder"]
            for name, phase in PHASES.items()
        }}
        print(json.dumps(dict(
            names=list(DECODERS), same=same, shapes=shapes, version=versions()["toy"],
            refused=refused, png=can_decode("toy", "png"), jpeg=can_decode("toy", "jpeg"),
            choices=choices,
        )))
    """
    r = _python(plugin, code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["names"] == ["pillow", "pillow-draft", "opencv", "simplejpeg", "turbojpeg", "toy"]
    assert out["same"] == [True] * 3
    assert all(crop == [224, 224, 3] and full[2] == 3 for full, crop in out["shapes"])
    assert out["version"].startswith("toy 0.1 (Pillow ")
    assert out["refused"] == (
        f"{tmp_path / 'photo.png'}: decoder toy: format png is not one it decodes (it decodes jpeg)"
    )
    assert (out["jpeg"], out["png"]) == (True, False)
    # every phase that takes a decoder offers the plug-in as one of its choices
    decoder_choices = [c for found in out["choices"].values() for c in found]
    assert decoder_choices and all("toy" in c for c in decoder_choices)


def test_a_decode_trial_runs_the_plugin_decoder_in_its_workers(small_dataset, tmp_path):
    plugin = _plugin(tmp_path / "plugin", "toy = toydecoder:TOY")
    out = tmp_path / "rec.json"
    args = ("--phase", "decode", "--variant", "processes-shm", "--workers", "2", "--n", "6")
    code = f"""
        import sys
        from imgread.cli.main import main
        sys.exit(main(["trial", "--manifest", {str(small_dataset)!r}, *{args!r},
                       "--decoder", "toy", "--delivery", "pixels", "--out", {str(out)!r}]))
    """
    r = _python(plugin, code)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["decoder"] == "toy" and rec["decoder_version"].startswith("toy 0.1 (Pillow ")
    assert rec["images"] == 6 and rec["checksums_checked"] == 6
    listing = _python(plugin, "from imgread.cli.main import main; main(['decoders'])")
    assert listing.returncode == 0, listing.stderr
    assert "\ntoy           toy 0.1 (Pillow " in listing.stdout
    assert "Pillow's ImageFile.Parser, 4 KiB a feed" in listing.stdout
    # without the plug-in the name is refused as any unknown decoder is
    bare = run_trial_cli(small_dataset, out, *args, "--decoder", "toy")
    assert bare.returncode != 0 and "invalid choice: 'toy'" in bare.stderr


def test_a_broken_plugin_stops_the_import_naming_it(tmp_path):
    plugin = _plugin(tmp_path / "plugin", "nodecode = toydecoder:NO_DECODE")
    r = _python(plugin, "import imgread.decoders")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        "RuntimeError: decoder toydecoder:NO_DECODE (entry point nodecode of group "
        "imgread.decoders) breaks the decoder contract: decode_fn is None, not a function; "
        "no description (one line: what it calls)"
    )


def _entry_points(monkeypatch, tmp_path, *lines: str) -> None:
    """``importlib.metadata.entry_points`` as if the toy's dist-info had ``lines``."""
    _plugin(tmp_path, "")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toydecoder", raising=False)
    eps = []
    for line in lines:
        name, _, value = (part.strip() for part in line.partition("="))
        eps.append(metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP))

    def entry_points(group=None, **_):
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(metadata, "entry_points", entry_points)


@pytest.mark.parametrize(
    "line, error, says",
    [
        (
            "pillow = toydecoder:CLASH",
            RuntimeError,
            "decoder 'pillow' of toydecoder:CLASH (entry point pillow of group imgread.decoders)"
            " is registered twice (already by imgread.decoders.pillow:pillow)",
        ),
        (
            "other = toydecoder:TOY",
            RuntimeError,
            "name 'toy' is not its entry point's name 'other'",
        ),
        (
            "toy = toydecoder:NOT_A_DECODER",
            RuntimeError,
            "decoder toydecoder:NOT_A_DECODER (entry point toy of group imgread.decoders) is "
            "function, not an imgread.decoders.base.Decoder",
        ),
        (
            "toy = toydecoder:NOTHING",
            UserError,
            "cannot load decoder toydecoder:NOTHING (entry point toy of group imgread.decoders):"
            " AttributeError",
        ),
        ("gone = nowhere_at_all:TOY", UserError, "ModuleNotFoundError: No module named"),
    ],
)
def test_a_broken_plugin_is_refused_naming_it_and_what_is_wrong(
    monkeypatch, tmp_path, line, error, says
):
    _entry_points(monkeypatch, tmp_path, line)
    with pytest.raises(error) as err:
        registry._discover()
    assert says in str(err.value)


def test_the_contract_check_lists_every_problem():
    bad = make_decoder("Bad Name", "not callable", print, jpeg_only, " ", into_fn=3)
    with pytest.raises(RuntimeError) as err:
        registry.check_decoder(bad, "tests:bad")
    assert str(err.value) == (
        "decoder tests:bad breaks the decoder contract: name 'Bad Name' must be lower-case "
        "letters, digits, - or _; decode_fn is 'not callable', not a function; into_fn is 3, "
        "neither a function nor None; no description (one line: what it calls)"
    )
    assert registry.check_decoder(registry.DECODERS["pillow"], "x") is registry.DECODERS["pillow"]
