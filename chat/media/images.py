"""The one entry point for photos: a stored JPEG or PNG rewritten without metadata (R7)."""

from __future__ import annotations

from pathlib import Path

from chat.media.jpeg import strip_jpeg
from chat.media.png import strip_png
from chat.media.rewriting import Rewritten


def strip_image(mime: str, source: Path, target: Path) -> Rewritten:
    """Rewrite ``source`` into ``target`` without metadata; returns hash, size, dimensions."""
    with source.open("rb") as src, target.open("wb") as dst:
        if mime == "image/jpeg":
            return strip_jpeg(src, dst)
        return strip_png(src, dst)
