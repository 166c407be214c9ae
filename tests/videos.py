"""Test videos made from photos, with known ground truth: who is on screen, from when to when.

Shared by the video tests and benchmarks/video.py (which puts this folder on its path). Each scene
shows one photo (scaled to fit, centred on a grey canvas), drifting a few pixels per frame so that
consecutive frames differ as real footage does; scenes follow each other with a hard cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Scene:
    """One photo on screen from ``start`` for ``seconds``."""

    photo: Path
    start: float
    seconds: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


def scenes_of(photos: list[Path], seconds: float, gap: float = 0.0) -> list[Scene]:
    """The photos one after another, ``seconds`` each, with ``gap`` seconds of empty grey between."""
    scenes, start = [], gap
    for photo in photos:
        scenes.append(Scene(photo, start, seconds))
        start += seconds + gap
    return scenes


def _canvas(photo: Path, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    image = Image.open(photo).convert("RGB")
    image.thumbnail((width - 40, height - 20))
    canvas = Image.new("RGB", size, (120, 120, 120))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return np.asarray(canvas)


def write_video(
    path: Path,
    scenes: list[Scene],
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    codec: str = "mpeg4",
    tail: float = 0.0,
) -> Path:
    """An encoded video of ``scenes`` (grey where none is on screen); returns ``path``."""
    import av

    width, height = size
    length = max(s.end for s in scenes) + tail
    pictures = {s.photo: _canvas(s.photo, size) for s in scenes}
    blank = np.full((height, width, 3), 120, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"  # MJPEG takes full-range YUV
        stream.bit_rate = 1_500_000
        for n in range(int(round(length * fps))):
            t = n / fps
            scene = next((s for s in scenes if s.start <= t < s.end), None)
            image = blank if scene is None else np.roll(pictures[scene.photo], (n % 8) - 4, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
