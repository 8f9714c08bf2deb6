"""What a person sees of a pool item: an image (PNG, or Unicode half-blocks in a terminal), or a table.

A payload becomes an image by its data set's own rule where it has one, else by a generic one:

- digits: 64 features in [0, 1] are an 8x8 image, ink = 1 (drawn dark on light);
- mnist, fashion-mnist: [1, 28, 28] standardized, x * std + mean undoes it (MNIST's ink drawn dark);
- anything shaped [H, W] or [C, H, W] (C = 1 or 3): min-max scaled to 0..255 (a flat image is mid-grey);
- other vectors: no image; they are shown as a table of features.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from torch import Tensor

TARGET_PIXELS = 224  # a PNG's longer side, reached by an integer nearest-neighbour upscale


def display_image(dataset_name: str, payload: Tensor) -> np.ndarray | None:
    """uint8 [H, W] (grey) or [H, W, 3] (colour) to show for `payload`; None for a plain vector."""
    from alab.data.mnist import IDX_SOURCES

    x = payload.detach().cpu().double().numpy()
    if dataset_name == "digits" and x.shape == (64,):
        return _to_uint8(1.0 - x.reshape(8, 8))
    if dataset_name in IDX_SOURCES and x.shape == (1, 28, 28):
        source = IDX_SOURCES[dataset_name]
        unit_H_W = x[0] * source.std + source.mean  # undo the standardization: back to [0, 1]
        return _to_uint8(1.0 - unit_H_W if dataset_name == "mnist" else unit_H_W)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    elif x.ndim != 2:
        return None
    low, high = float(x.min()), float(x.max())
    return _to_uint8((x - low) / (high - low) if high > low else np.full_like(x, 0.5))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """The image as PNG, upscaled by an integer factor (nearest) towards TARGET_PIXELS on its longer side."""
    from PIL import Image

    scale = max(1, TARGET_PIXELS // max(image.shape[:2]))
    picture = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def half_blocks(image: np.ndarray, min_width: int = 16) -> str:
    """The image as lines of '▀' in 24-bit colour: the top pixel is the glyph, the bottom its background.

    Two pixel rows per text row make the pixels square on a terminal; small images are upscaled to
    at least `min_width` columns.
    """
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    scale = max(1, -(-min_width // rgb.shape[1]))
    rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.full_like(rgb[:1], 255)], axis=0)
    lines = []
    for top_W_3, bottom_W_3 in zip(rgb[0::2], rgb[1::2]):
        cells = (
            f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀" for t, b in zip(top_W_3, bottom_W_3)
        )
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def feature_rows(payload: Tensor, limit: int = 32, names: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """(name, value) of a vector's first `limit` features, for a table: the data set's column `names`, else x0, x1, ..."""
    values = payload.detach().cpu().flatten().tolist()
    return [(names[i] if names else f"x{i}", round(float(v), 4)) for i, v in enumerate(values[:limit])]


def feature_line(rows: Sequence[tuple[str, float]]) -> str:
    """A table row's (name, value) pairs (`feature_rows`) as one line of text, "name = value, ...",
    for a text field (Label Studio's $text)."""
    return ", ".join(f"{name} = {value}" for name, value in rows)


def top_classes(view: dict, classes: tuple[str, ...], k: int = 3) -> list[tuple[str, float]]:
    """The model's `k` most probable classes for a query, from its view {"probs": [...]} ([] if none)."""
    probs = view.get("probs") or []
    order = sorted(range(len(probs)), key=lambda c: -probs[c])[:k]
    return [(classes[c], float(probs[c])) for c in order]
