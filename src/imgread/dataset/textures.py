"""The photo-like textures every generated image is cut from: a 1/f colour field, hard edges
and sensor grain, plus the per-texture colour variants (lookup tables)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageDraw

N_TEXTURES = 4
N_COLOURS = 4
GRAIN_TILE = 509  # prime


def _pink_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A zero-mean, unit-variance field with a 1/f amplitude spectrum (like natural images)."""
    spectrum = np.fft.rfft2(rng.standard_normal((h, w), dtype=np.float32))
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    spectrum /= radius
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-9
    return field


def make_texture(seed: int, index: int, width: int, height: int) -> np.ndarray:
    """One photo-like RGB texture (height x width x 3, uint8): 1/f colour field, edges, grain."""
    return np.asarray(texture_image(seed, index, width, height))


def texture_image(seed: int, index: int, width: int, height: int) -> Image.Image:
    """:func:`make_texture` as a Pillow image.

    The low-frequency field is synthesised at a quarter of the size and upscaled (1/f content
    is scale-free); hard-edged shapes add the edges; per-pixel luminance and chroma grain add
    the fine detail that makes a JPEG of a photo cost what it costs to decode.
    """
    rng = np.random.default_rng([seed, index, 0x7E47])
    h, w = max(height // 4, 8), max(width // 4, 8)
    mix = (
        rng.normal(size=(3, 3)).astype(np.float32) * 0.35 + np.eye(3, dtype=np.float32) * 0.6 + 0.45
    )
    fields = np.stack([_pink_field(rng, h, w) for _ in range(3)], axis=-1) @ mix.T
    low = np.clip(128 + 42 * fields, 0, 255).astype(np.uint8)
    img = Image.fromarray(low, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    _draw_shapes(ImageDraw.Draw(img), rng, width, height)
    # a + (grain + 128) - 128, clipped to 0..255, in C
    return ImageChops.add(img, _grain(rng, width, height), scale=1.0, offset=-128)


def _draw_shapes(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """Hard-edged polygons and lines: the edges of a photo."""
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(width // 40, 2), max(width // 6, 3)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        points = [
            (int(x0 + rng.normal() * size), int(y0 + rng.normal() * size))
            for _ in range(int(rng.integers(3, 7)))
        ]
        if rng.random() < 0.6:
            draw.polygon(points, fill=colour)
        else:
            draw.line(points, fill=colour, width=int(rng.integers(2, 12)))


def _grain(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Sensor-like grain, offset by 128: luminance plus weaker chroma noise, drawn as a
    prime-sized tile (cheap, and never aligned with the 8x8 JPEG blocks) and repeated."""
    tile = GRAIN_TILE
    grain = rng.standard_normal((tile, tile, 1), dtype=np.float32) * 6.0
    grain = grain + rng.standard_normal((tile, tile, 3), dtype=np.float32) * 3.0
    grain_tile = Image.fromarray(np.clip(np.round(grain) + 128, 0, 255).astype(np.uint8), "RGB")
    grain_full = Image.new("RGB", (width, height))
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            grain_full.paste(grain_tile, (x, y))
    return grain_full


def colour_luts(seed: int, texture: int) -> list[np.ndarray]:
    """N_COLOURS per-channel lookup tables (3 x 256): identity first, then gain/offset/gamma."""
    rng = np.random.default_rng([seed, texture, 0xC0102])
    values = np.arange(256, dtype=np.float32) / 255.0
    luts = [np.tile(np.arange(256, dtype=np.uint8), (3, 1))]
    for _ in range(N_COLOURS - 1):
        gain = rng.uniform(0.9, 1.1, 3)
        offset = rng.uniform(-0.06, 0.06, 3)
        gamma = rng.uniform(0.85, 1.15, 3)
        lut = [(np.clip(values ** gamma[c] * gain[c] + offset[c], 0, 1) * 255) for c in range(3)]
        luts.append(np.round(np.stack(lut)).astype(np.uint8))
    return luts
