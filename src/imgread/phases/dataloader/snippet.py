"""The DataLoader phase's code to paste (imgread.answer.snippets): torch's ``DataLoader(...)``
over a Dataset of the row's decoder and source, and the peers as their users write them:
torchvision's ImageFolder and torchvision.io, the ``tf.data`` chain, the DALI CPU pipeline,
LitData's StreamingDataset, s3torchconnector's S3MapDataset.
Each leaves ``images``: float32 224 x 224 samples (CHW; NHWC for tf.data),
normalised as the seed's (x / 255 - 0.5) / 0.5, one per file in order.
"""

from __future__ import annotations

from imgread.answer.snippet_parts import allocator, decoder, header, reader, single_threaded
from imgread.answer.snippet_tf import TF_SETUP, tf_parts
from imgread.phases.dataloader.snippet_dali import dali


def _constants(workers: int, p: dict) -> dict:
    out = {
        "BATCH_SIZE": int(p.get("batch_size", "32") or 32),
        "WORKERS": workers,
        "PIN_MEMORY": p.get("pin_memory", "false") == "true",
    }
    return {**out, **({"POOL": max(workers, 1)} if p["remote"] else {})}


def snippet(variant: str, workers: int, p: dict, dataset: str) -> str:
    """The snippet of a DataLoader-phase row: torch's, or the peer library's."""
    build = {
        "torchvision-imagefolder": _imagefolder,
        "torchvision-io": _tvio,
        "tf-data": _tf,
        "dali-cpu": dali,
        "litdata": _litdata,
        "s3torch-map": _s3torch,
    }.get(variant, _torch)
    imports, body, tail = build(p)
    return header(dataset, imports, _constants(workers, p)) + body + "\n\n" + tail.strip() + "\n"


def _read(p: dict) -> tuple[list[str], str]:
    return reader(p["remote"], p.get("client", "imgread"))


# -- torch's DataLoader over the project's Dataset

SOURCES = {
    "jpeg": ("", "decode(read(self.files[i])).transpose(2, 0, 1)"),
    # every image decoded once into one .npy, each sample read from its memory map
    "cache-npy": (
        """
CACHE = os.path.join(tempfile.mkdtemp(), "decoded.npy")  # N x 3 x 224 x 224 uint8, built once
np.save(CACHE, np.stack([decode(read(f)).transpose(2, 0, 1) for f in FILES]))
""",
        'np.array(np.load(CACHE, mmap_mode="r")[i])',
    ),
    # every image decoded once and kept in memory (the seed pickles this list, loads it first)
    "cache-pickle": (
        "\nDECODED = [decode(read(f)).transpose(2, 0, 1) for f in FILES]\n",
        "DECODED[i]",
    ),
}
TORCH = '''

def worker_init(worker_id):
    torch.set_num_threads(1)  # one core per worker
    FIRST


class Images(Dataset):
    """(the 224 crop, CHW, NORMALISED, its index) of each file."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        chw = torch.from_numpy(np.ascontiguousarray(SAMPLE))
        return ITEM, i
'''
NORM = "x.float().div_(255).sub_(0.5).div_(0.5)"
LOADER = """
loader = DataLoader(
    DATASET,
    batch_size=BATCH_SIZE,
    num_workers=WORKERS,
    pin_memory=PIN_MEMORY,
    persistent_workers=WORKERS > 0,
    prefetch_factor=2 if WORKERS > 0 else None,
    worker_init_fn=INIT,
)
"""


def _torch(p: dict):
    rimports, read = _read(p)
    name = p.get("decoder", "pillow")
    dimports, decode = decoder(name, True)
    first = single_threaded(name, True) + allocator(p.get("allocator", "default"))
    source = p.get("source", "jpeg")
    per_batch = p.get("normalize", "item") == "batch"
    item = "chw" if per_batch else NORM.replace("x.", "chw.")
    dataset = "" if source == "shards" else ", Dataset"
    imports = ["import torch", f"from torch.utils.data import DataLoader{dataset}", *rimports]
    imports += dimports
    if source == "shards":
        return _shards(p, imports, read + decode, first, item)
    build, sample = SOURCES.get(source, SOURCES["jpeg"])
    imports += ["import tempfile"] if source == "cache-npy" else []
    body = read + decode + build + TORCH.replace("SAMPLE", sample).replace("ITEM", item)
    body = body.replace("FIRST", first.strip().replace("\n", "\n    ") or "pass")
    body = body.replace("NORMALISED", "uint8" if per_batch else "normalised")
    tail = first + LOADER.replace("DATASET", "Images(FILES)").replace("INIT", "worker_init")
    batch = NORM if per_batch else "x"
    note = "# collate=pooled: the project reuses shared-memory batches (docs/dataloader.md)\n"
    tail = (note if p.get("collate") == "pooled" else "") + tail
    how = p.get("normalize", "item")
    tail += f"batches = [{batch}.numpy() for x, _ in loader]  # normalize={how}\n"
    return imports, body, tail + "images = np.concatenate(batches)\n"


def _shards(p: dict, imports, body: str, first: str, item: str):
    """source=shards: webdataset over the dataset's tar shards of shard_mb MB."""
    mb = p.get("shard_mb", "0")
    body += f'''
SHARDS = sorted(glob.glob(os.path.join(DATA, "..", "shards", "{mb}mb", "*.tar")))


def sample(s):
    """(the 224 crop, its key) of one tar sample."""
    data = next(v for k, v in s.items() if k in ("jpg", "jpeg", "png", "webp"))
    chw = torch.from_numpy(np.ascontiguousarray(decode(data).transpose(2, 0, 1)))
    return {item}, s["__key__"]
'''
    tail = first + LOADER.replace(
        "DATASET", "wds.WebDataset(SHARDS, shardshuffle=False, empty_check=False).map(sample)"
    ).replace("INIT", "None")
    tail += "pairs = [(x.numpy(), k) for x, ks in loader for k in [list(ks)]]\n"
    tail += "keys = [k for _, ks in pairs for k in ks]\n"
    tail += "images = np.concatenate([x for x, _ in pairs])[np.argsort(keys)]\n"
    return [*imports, "import webdataset as wds"], body, tail


# -- the peers

TV_TRANSFORM = """
TRANSFORM = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]
)
"""


def _imagefolder(p: dict):
    body = (
        TV_TRANSFORM
        + """
# ImageFolder reads ROOT/<class>/<image>: here one class of links to FILES
ROOT = tempfile.mkdtemp()
os.makedirs(os.path.join(ROOT, "0"))
for f in FILES:
    os.symlink(os.path.abspath(f), os.path.join(ROOT, "0", os.path.basename(f)))
"""
    )
    tail = LOADER.replace("DATASET", "datasets.ImageFolder(ROOT, transform=TRANSFORM)")
    tail = tail.replace("    worker_init_fn=INIT,\n", "")
    tail += "images = np.concatenate([x.numpy() for x, _ in loader])\n"
    imports = ["import tempfile", "import numpy as np", "from torch.utils.data import DataLoader"]
    return [*imports, "from torchvision import datasets, transforms"], body, tail


def _tvio(p: dict):
    rimports, read = _read(p)
    body = (
        read
        + '''
TRANSFORM = v2.Compose(
    [
        v2.Resize(256, antialias=True),
        v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]
)


class Images(Dataset):
    """(the 224 crop, normalised, its index): decode_jpeg and v2 on tensors, no PIL."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        data = torch.frombuffer(bytearray(read(self.files[i])), dtype=torch.uint8)
        return TRANSFORM(decode_jpeg(data, mode=ImageReadMode.RGB)), i
'''
    )
    tail = LOADER.replace("DATASET", "Images(FILES)").replace("    worker_init_fn=INIT,\n", "")
    tail += "images = np.concatenate([x.numpy() for x, _ in loader])\n"
    imports = [
        "import numpy as np",
        "import torch",
        "from torch.utils.data import DataLoader, Dataset",
    ]
    imports += [
        "from torchvision.io import ImageReadMode, decode_jpeg",
        "from torchvision.transforms import v2",
    ]
    return [*imports, *rimports], body, tail


def _litdata(p: dict):
    mb = int(p.get("shard_mb", "0") or 0) or 8
    body = (
        TV_TRANSFORM
        + f'''
CHUNKS = os.path.join(tempfile.mkdtemp(), "chunks")  # litdata.optimize's output, made once
CHUNK_BYTES = {mb} * 1_000_000  # shard_mb={mb}


def sample(item):
    """One sample as litdata.optimize stores it."""
    index, path = item
    with open(path, "rb") as fh:
        return {{"index": index, "image": fh.read(), "label": 0}}


class Images(litdata.StreamingDataset):
    """Each sample decoded in __getitem__ (PIL + torchvision's transforms)."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        image = Image.open(io.BytesIO(item["image"])).convert("RGB")
        return TRANSFORM(image), item["index"]
'''
    )
    tail = """
litdata.optimize(
    fn=sample,
    inputs=list(enumerate(FILES)),
    output_dir=CHUNKS,
    chunk_bytes=CHUNK_BYTES,
    num_workers=1,
    start_method="fork",  # the chunks in the files' order, no second interpreter
    reorder_files=False,
    verbose=False,
)
loader = litdata.StreamingDataLoader(
    Images(WHERE, shuffle=False, drop_last=False, **OPTIONS),
    batch_size=BATCH_SIZE,
    num_workers=WORKERS,
    persistent_workers=WORKERS > 0,
    pin_memory=PIN_MEMORY,
)
pairs = [(x.numpy(), k.numpy()) for x, k in loader]
order = np.argsort(np.concatenate([k for _, k in pairs]))
images = np.concatenate([x for x, _ in pairs])[order]
"""
    imports = ["import io", "import tempfile", "import litdata", "import numpy as np"]
    imports += ["from PIL import Image", "from torchvision import transforms"]
    if not p["remote"]:
        return imports, body + "WHERE, OPTIONS = CHUNKS, {}\n", tail
    imports += ["from botocore import UNSIGNED", "from botocore.config import Config"]
    return imports, body + LITDATA_REMOTE, tail


# On an object store: the chunks uploaded there (LitData's S3 reads need https)
LITDATA_REMOTE = """
ENDPOINT = os.environ["IMGREAD_ENDPOINT"]  # your store's address, https://...
BUCKET = os.environ.get("IMGREAD_BUCKET", "images")
REGION = os.environ.get("IMGREAD_REGION", "us-east-1")
WHERE = os.environ.get("IMGREAD_CHUNKS", f"s3://{BUCKET}/chunks")  # CHUNKS, uploaded there
OPTIONS = {
    "storage_options": {
        "endpoint_url": ENDPOINT,
        "region_name": REGION,
        "config": Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}),
    }
}
"""


def _s3torch(p: dict):
    body = (
        TV_TRANSFORM
        + '''
ENDPOINT = os.environ["IMGREAD_ENDPOINT"]  # your store's address, e.g. http://10.0.0.5:9000
BUCKET = os.environ.get("IMGREAD_BUCKET", "images")
REGION = os.environ.get("IMGREAD_REGION", "us-east-1")
INDEX = {os.path.relpath(f, DATA): i for i, f in enumerate(FILES)}


def transform(reader):
    """An object's bytes decoded by PIL and transformed, with its index."""
    image = Image.open(io.BytesIO(reader.read())).convert("RGB")
    return TRANSFORM(image), INDEX[reader.key]


dataset = S3MapDataset.from_objects(
    [f"s3://{BUCKET}/{key}" for key in INDEX],
    region=REGION,
    endpoint=ENDPOINT,
    s3client_config=S3ClientConfig(unsigned=True, force_path_style=True),
    transform=transform,
)
'''
    )
    tail = LOADER.replace("DATASET", "dataset").replace("    worker_init_fn=INIT,\n", "")
    tail += "images = np.concatenate([x.numpy() for x, _ in loader])\n"
    imports = ["import io", "import numpy as np", "from PIL import Image"]
    imports += ["from s3torchconnector import S3ClientConfig, S3MapDataset"]
    imports += ["from torch.utils.data import DataLoader", "from torchvision import transforms"]
    return imports, body, tail


def _tf(p: dict):
    """(imports, body, tail) of the tf-data row: the chain as measured."""
    crop = "image[top : top + 224, left : left + 224, :]"
    crop = f"tf.ensure_shape(({crop} / 255.0 - 0.5) / 0.5, (224, 224, 3))"
    imports, body = tf_parts(p, crop)
    body = f"\nRATIO = {int(p.get('ratio', '1') or 1)}\n" + body
    tail = """
options = tf.data.Options()
options.threading.private_threadpool_size = THREADS
dataset = (
    tf.data.Dataset.from_tensor_slices(FILES)
    .map(transform, num_parallel_calls=WORKERS or tf.data.AUTOTUNE)
    .batch(BATCH_SIZE)
    .prefetch(tf.data.AUTOTUNE)
    .with_options(options)
)
images = np.concatenate([b.numpy() for b in dataset])  # NHWC float32
"""
    return imports, "\n" + TF_SETUP + body, tail
