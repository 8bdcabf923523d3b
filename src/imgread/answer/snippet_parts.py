"""The pieces every pasted snippet is made of (imgread.answer.snippets): the file list, the
read of one image's bytes (a file, or an object store through the row's client) and the
decode function of the row's decoder, to the full image or the 224 crop, as the project's
decoders do it (imgread.decoders: the same library calls, the same DCT scale, the same
``cv2.resize(INTER_AREA)`` of the shorter side to 256 and centre crop).

Each piece is Python source text; nothing here imports an image library.
"""

from __future__ import annotations

from imgread.decoders.allocator import GLIBC_TRIM_THRESHOLD, PILLOW_BLOCKS_MAX

# Where a smoke or study run keeps a dataset's images (results/datasets/<name>/images).
DATA_DIR = "results/datasets/{dataset}/images"
RETRIES = 2  # the storage profiles' default retries (imgread.storage.http.retry.RetryPolicy)
BOTO3_MIN_POOL = 10  # botocore's own default max_pool_connections


def header(dataset: str, imports: list[str], constants: dict[str, object]) -> str:
    """The snippet's imports, its dataset folder (a variable the user sets) and constants."""
    lines = sorted({"import glob", "import os", *imports}, key=_import_order)
    lines += [
        "",
        f'DATA = os.environ.get("IMGREAD_DATA", "{DATA_DIR.format(dataset=dataset)}")',
        'FILES = sorted(glob.glob(os.path.join(DATA, "*.*")))',
    ]
    lines += [f"{k} = {v!r}" for k, v in constants.items()]
    return "\n".join(lines) + "\n\n"


def _import_order(line: str) -> tuple:
    # plain imports first, then from-imports, each alphabetical (as ruff's isort sorts them)
    return (line.startswith("from"), line.split()[1].lower())


# -- the bytes of one image

LOCAL_READ = '''
def read(path):
    """The file's bytes."""
    with open(path, "rb") as fh:
        return fh.read()
'''

STORE = '''ENDPOINT = os.environ["IMGREAD_ENDPOINT"]  # your store's address, e.g. http://10.0.0.5:9000
BUCKET = os.environ.get("IMGREAD_BUCKET", "images")
REGION = os.environ.get("IMGREAD_REGION", "us-east-1")
_clients = {}


def key_of(path):
    """The object's key: the file's path under DATA."""
    return os.path.relpath(path, DATA)
'''

CLIENTS = {
    "boto3": (
        ["import boto3", "from botocore import UNSIGNED", "from botocore.config import Config"],
        '''

def client():
    """One boto3 client per process (a client is not fork-safe)."""
    if os.getpid() not in _clients:
        config = Config(
            signature_version=UNSIGNED,
            s3={"addressing_style": "path"},
            region_name=REGION,
            max_pool_connections=max(POOL, %(min_pool)d),
            retries={"total_max_attempts": %(attempts)d, "mode": "standard"},
        )
        session = boto3.session.Session()
        _clients[os.getpid()] = session.client("s3", endpoint_url=ENDPOINT, config=config)
    return _clients[os.getpid()]


def read(path):
    """The object's bytes."""
    return client().get_object(Bucket=BUCKET, Key=key_of(path))["Body"].read()
''',
    ),
    "obstore": (
        ["import obstore", "from obstore.store import S3Store"],
        '''

def client():
    """One S3Store per process."""
    if os.getpid() not in _clients:
        _clients[os.getpid()] = S3Store(
            BUCKET,
            endpoint=ENDPOINT,
            region=REGION,
            skip_signature=True,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )
    return _clients[os.getpid()]


def read(path):
    """The object's bytes."""
    return bytes(obstore.get(client(), key_of(path)).bytes())
''',
    ),
    "s3torchconnector": (
        [
            "from s3torchconnector import S3ClientConfig",
            "from s3torchconnector._s3client import S3Client",
        ],
        '''

def client():
    """One s3torchconnector client per process."""
    if os.getpid() not in _clients:
        config = S3ClientConfig(unsigned=True, force_path_style=True)
        _clients[os.getpid()] = S3Client(REGION, endpoint=ENDPOINT, s3client_config=config)
    return _clients[os.getpid()]


def read(path):
    """The object's bytes."""
    return client().get_object(BUCKET, key_of(path)).read()
''',
    ),
    # the project's own client: one keep-alive HTTP GET per object, path style, unsigned
    "imgread": (
        ["import http.client", "import urllib.parse"],
        '''

def client():
    """One keep-alive connection per process and thread."""
    import threading

    me = (os.getpid(), threading.get_ident())
    if me not in _clients:
        url = urllib.parse.urlsplit(ENDPOINT)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        _clients[me] = kind(url.hostname, url.port, timeout=30)
    return _clients[me]


def read(path):
    """The object's bytes (GET /bucket/key)."""
    conn = client()
    conn.request("GET", "/" + BUCKET + "/" + urllib.parse.quote(key_of(path)))
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise OSError(f"GET {key_of(path)}: HTTP {resp.status}")
    return data
''',
    ),
}


def reader(remote: bool, client: str) -> tuple[list[str], str]:
    """(imports, source) of ``read(path) -> bytes``: the file, or the object through
    ``client`` (needs a ``POOL`` constant for boto3's connection pool)."""
    if not remote:
        return [], LOCAL_READ
    imports, body = CLIENTS.get(client, CLIENTS["imgread"])
    body = body % dict(min_pool=BOTO3_MIN_POOL, attempts=RETRIES + 1) if "%(" in body else body
    return imports, STORE + body


# -- the decode of one image's bytes

TARGET = '''

def target(w, h):
    """(width, height) with the shorter side 256, the aspect ratio kept."""
    s = 256 / min(w, h)
    return max(256, round(w * s)), max(256, round(h * s))
'''
RESIZE_CROP = '''

def resize_crop(rgb):
    """The shorter side to 256 (INTER_AREA), then the centre 224 x 224."""
    h, w = rgb.shape[:2]
    tw, th = target(w, h)
    if (tw, th) != (w, h):
        rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    top, left = (th - 224) // 2, (tw - 224) // 2
    return np.ascontiguousarray(rgb[top : top + 224, left : left + 224])
'''

DECODE = {
    "pillow": (
        ["import io", "from PIL import Image"],
        """
    with Image.open(io.BytesIO(data)) as img:
        return FINISH(np.asarray(img.convert("RGB")))
""",
    ),
    "pillow-draft": (
        ["import io", "from PIL import Image"],
        """
    with Image.open(io.BytesIO(data)) as img:
        if CROP and img.format == "JPEG":
            img.draft("RGB", target(*img.size))  # the smallest DCT scale that covers it
        return FINISH(np.asarray(img.convert("RGB")))
""",
    ),
    "opencv": (
        ["import io", "from PIL import Image"],
        """
    flags = cv2.IMREAD_COLOR
    if CROP:  # a JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8) that covers it
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
        tw, th = target(w, h)
        f = next((f for f in (8, 4, 2) if -(-w // f) >= tw and -(-h // f) >= th), 1)
        flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}.get(f, flags)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    return FINISH(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
""",
    ),
    "simplejpeg": (
        ["import simplejpeg"],
        """
    if not CROP:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    tw, th = target(w, h)  # simplejpeg picks the DCT scale that covers it
    return resize_crop(simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=tw, min_height=th))
""",
    ),
    "turbojpeg": (
        ["from turbojpeg import TJPF_RGB, TurboJPEG"],
        """
    jpeg = TurboJPEG()
    if not CROP:
        return jpeg.decode(data, pixel_format=TJPF_RGB, flags=0)
    w, h = jpeg.decode_header(data)[:2]
    tw, th = target(w, h)
    scales = sorted((f for f in jpeg.scaling_factors if f[0] <= f[1]), key=lambda f: f[0] / f[1])
    fits = (f for f in scales if -(-w * f[0] // f[1]) >= tw and -(-h * f[0] // f[1]) >= th)
    n, d = next(fits, (1, 1))
    scale = None if n == d else (n, d)  # the smallest M/8 that covers it
    return resize_crop(jpeg.decode(data, pixel_format=TJPF_RGB, scaling_factor=scale, flags=0))
""",
    ),
}


def decoder(name: str, crop: bool) -> tuple[list[str], str]:
    """(imports, source) of ``decode(data) -> H x W x 3 uint8 RGB`` with the row's decoder:
    the full image, or (``crop``) the 224 crop."""
    imports, body = DECODE.get(name, DECODE["pillow"])
    body = body.replace("FINISH", "resize_crop" if crop else "")
    resizes = "resize_crop" in body
    source = f"\n\nCROP = {crop}\n" + (TARGET if resizes or "target(" in body else "")
    source += RESIZE_CROP if resizes else ""
    source += (
        '\n\ndef decode(data):\n    """The image\'s RGB pixels'
        + (', the 224 crop."""' if crop else '."""')
        + body
    )
    cv2 = resizes or name == "opencv"
    uses_np = cv2 or "np." in body
    imports = [
        *imports,
        *(["import numpy as np"] if uses_np else []),
        *(["import cv2"] if cv2 else []),
    ]
    return imports, source


def single_threaded(decoder_name: str, crop: bool) -> str:
    """The line that keeps OpenCV to one thread, where the snippet uses it."""
    return (
        "cv2.setNumThreads(1)  # OpenCV on one core\n" if crop or decoder_name == "opencv" else ""
    )


def allocator(name: str) -> str:
    """The lines that give the process the row's allocator (``tuned``), or none."""
    if name != "tuned":
        return ""
    return (
        "# allocator=tuned: Pillow keeps its blocks, glibc keeps freed memory (start Python\n"
        f"# with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_={GLIBC_TRIM_THRESHOLD} for the same)\n"
        "from PIL import Image as _Image  # noqa: E402\n\n"
        f"_Image.core.set_blocks_max({PILLOW_BLOCKS_MAX})\n"
    )


def parts(p: dict, crop: bool, pool: int):
    """(imports, the read and decode functions' source, the lines run first, constants) of a
    row's params ``p`` (its job and settings, and ``remote``)."""
    rimports, read = reader(p["remote"], p.get("client", "imgread"))
    name = p.get("decoder", "pillow")
    dimports, decode = decoder(name, crop)
    first = single_threaded(name, crop) + allocator(p.get("allocator", "default"))
    constants = {"POOL": pool} if p["remote"] else {}
    return [*rimports, *dimports], read + decode, first, constants


def code(dataset: str, imports, constants, body: str, tail: str) -> str:
    """The snippet: its header, the functions and the run."""
    return header(dataset, list(imports), constants) + body + "\n\n" + tail.strip() + "\n"


# -- the pools the load and decode phases run a function in, over a list

POOL_IMPORTS = {
    "threads": ["from concurrent.futures import ThreadPoolExecutor"],
    "processes": ["from concurrent.futures import ProcessPoolExecutor"],
}
POOL_RUN = {
    "sequential": "images = [{fn}(x) for x in {items}]",
    "threads": """
with ThreadPoolExecutor(max_workers=WORKERS) as pool:
    images = list(pool.map({fn}, {items}))
""",
    "processes": """
with ProcessPoolExecutor(max_workers=WORKERS) as pool:
    images = list(pool.map({fn}, {items}, chunksize=max(1, len({items}) // (4 * WORKERS))))
""",
}
