"""The ``torchvision-imagefolder`` pipeline, the seed's first example as a user runs it:
``torchvision.datasets.ImageFolder`` (PIL's open + ``convert("RGB")``) with
``transforms.Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize((0.5,)*3,
(0.5,)*3)])`` in a ``DataLoader(batch_size, num_workers, pin_memory)``.

ImageFolder reads a folder of class folders, so it reads a view of the dataset: one folder per
class label (its number, zero-padded, so that ImageFolder's sorted class names give the
manifest's labels; a class none of the trial's images has is an empty folder, read with
``allow_empty=True``), holding a relative symbolic link to each of the trial's n images
(``<root>/imagefolder/n<N>/<label>/<key>_<name>``). The view is made once, before the clock, in
a temporary folder renamed into place, and reused while its ``view.json`` and links are what
the trial needs (``imagefolder_view``: made or reused). The links' targets are the dataset's
files, the phase's cache files: a cold trial evicts exactly the pages ImageFolder reads.

ImageFolder's samples are in the order of its sorted class and file names, not the manifest's,
and it yields ``(image, target)``; the manifest position of each sample comes from the path
ImageFolder itself opened (``samples[i][0]``), looked up in the view's own list of links, by a
small wrapper around the ImageFolder (:class:`KeyedFolder`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from imgread.dataset.labels import labels as class_labels
from imgread.errors import UserError
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.torchvision_io import ONE_VALUE, PeerLoader

VIEW_DIR = "imagefolder"
VIEW_INFO = "view.json"
TRANSFORM = "Resize(256), CenterCrop(224), ToTensor(), Normalize((0.5,)*3, (0.5,)*3)"


def view_folder(ctx) -> Path:
    """Where the trial's view lives: one per dataset folder and image count."""
    return ctx.root / VIEW_DIR / f"n{len(ctx.entries)}"


def view_links(ctx) -> dict[str, list]:
    """{link path relative to the view: [target relative to the dataset root, key]}: one link
    per image of the trial, in the folder of its class label."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    labels = class_labels(ctx.manifest)
    width = len(str(max(int(labels.max()), 0))) if len(labels) else 1
    kwidth = len(str(max(len(ctx.entries) - 1, 0)))
    out = {}
    for key, entry in enumerate(ctx.entries):
        name = Path(entry.path).name
        if not name.lower().endswith(IMG_EXTENSIONS):
            raise UserError(
                f"dataloader torchvision-imagefolder: {entry.path} has an extension ImageFolder "
                f"skips (it reads {', '.join(IMG_EXTENSIONS)}); use another pipeline"
            )
        out[f"{int(labels[key]):0{width}d}/{key:0{kwidth}d}_{name}"] = [entry.path, key]
    return out


def _classes(ctx) -> list[str]:
    labels = class_labels(ctx.manifest)
    top = int(labels.max()) if len(labels) else 0
    return [f"{c:0{len(str(top))}d}" for c in range(top + 1)]


def _complete(folder: Path, links: dict, dataset_id: str) -> bool:
    """The view at ``folder`` holds exactly ``links``, each pointing at its target."""
    try:
        info = json.loads((folder / VIEW_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if info.get("dataset_id") != dataset_id or info.get("links") != links:
        return False
    found = {f"{d.name}/{f.name}" for d in folder.iterdir() if d.is_dir() for f in d.iterdir()}
    if found != set(links):
        return False
    root = folder.parents[1]
    return all(
        os.path.samefile(folder / link, root / target) for link, (target, _) in links.items()
    )


def _build(tmp: Path, links: dict, classes: list[str], dataset_id: str) -> None:
    for cls in classes:
        (tmp / cls).mkdir()
    root = tmp.parents[1]
    for link, (target, _) in links.items():
        where = tmp / link
        os.symlink(os.path.relpath(root / target, where.parent), where)
    # written last: a view without it is never taken as complete
    info = {"dataset_id": dataset_id, "links": links}
    (tmp / VIEW_INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")


def ensure_view(ctx) -> tuple[Path, dict, str]:
    """(the view's folder, its links, "made" or "reused"): made in a temporary folder beside it
    and renamed into place (a stale view, of another dataset, replaced); reused when complete."""
    folder, links = view_folder(ctx), view_links(ctx)
    if _complete(folder, links, ctx.dataset_id):
        return folder, links, "reused"
    try:
        folder.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    except OSError as exc:
        raise UserError(
            f"dataloader torchvision-imagefolder: cannot make its class-folder view in "
            f"{folder.parent} ({exc.strerror}): the dataset's folder must be writable"
        ) from None
    stale = folder.parent / f".stale-{tmp.name}"
    try:
        _build(tmp, links, _classes(ctx), ctx.dataset_id)
        tmp.chmod(0o755)  # mkdtemp's is 0700: the view is as readable as the dataset
        if folder.exists():
            folder.rename(stale)
        try:
            tmp.rename(folder)
        except OSError:  # another trial made it in the meantime
            if not _complete(folder, links, ctx.dataset_id):
                raise
            return folder, links, "reused"
        return folder, links, "made"
    finally:
        for left in (tmp, stale):
            if left.exists():
                shutil.rmtree(left)


class KeyedFolder:
    """An ImageFolder's ``(image, target)`` and the manifest position of the file it opened
    (``samples[i][0]``, looked up among the view's links)."""

    def __init__(self, folder, keys: dict[str, int]):
        self.folder, self.keys = folder, keys

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        image, target = self.folder[i]
        return image, target, self.keys[self.folder.samples[i][0]]


class ImageFolderRunner(PeerLoader):
    """``torchvision-imagefolder``: ImageFolder over the view, in a DataLoader's workers."""

    transform = TRANSFORM

    def samples(self, ctx):
        import PIL
        from torchvision import datasets, transforms

        self.decoder = f"PIL.Image.open + convert('RGB') (Pillow {PIL.__version__})"
        t0 = time.perf_counter()
        root, links, self.view_state = ensure_view(ctx)
        self.view_seconds = time.perf_counter() - t0
        transform = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )
        folder = datasets.ImageFolder(str(root), transform=transform, allow_empty=True)
        keys = {os.path.join(str(root), link): key for link, (_, key) in links.items()}
        if len(folder) != len(links) or set(folder.classes) != set(_classes(ctx)):
            raise RuntimeError(
                f"ImageFolder read {len(folder)} images in {len(folder.classes)} classes from "
                f"{root}, made with {len(links)}: remove the folder and run again"
            )
        self.view_folder = str(root)
        return KeyedFolder(folder, keys)

    def fields(self) -> dict:
        return {
            **super().fields(),
            "imagefolder_view": self.view_state,
            "imagefolder_view_seconds": self.view_seconds,
            "imagefolder_root": self.view_folder,
        }


PIPELINE = Pipeline(
    "torchvision-imagefolder",
    "torchvision.datasets.ImageFolder (PIL) + transforms in a DataLoader(num_workers=workers) "
    "over a class-folder view of links; 0 loads in the calling process",
    "imgread.phases.dataloader.pipelines.torchvision_imagefolder:ImageFolderRunner",
    imports=("torch", "torchvision", "PIL"),
    distributions=("torch", "torchvision", "pillow"),
    allowed={**ONE_VALUE, "storage": ("local",)},
    min_workers=0,
    reads="a class-folder view of links to the trial's files, on this machine only",
)
ImageFolderRunner.pipeline = PIPELINE
