"""Safe video decoding: a video file -> upright RGB frames at a sampling rate, with their times.

PyAV (FFmpeg's libraries, shipped in its wheels) demuxes and decodes. Frames are iterated, never
held: memory stays bounded whatever the length. Times come from each frame's own timestamp, so
variable frame rates sample correctly. Besides the regular samples, a frame that differs sharply
from the last one (a scene cut) is taken too, so a face seen only briefly after a cut is not missed.

Bad input is an ImageError with a stable reason, as for photos: ``not-a-video`` (no video stream,
or a file FFmpeg cannot read as a container: a renamed zip), ``unsupported-codec``, ``too-long``
(over ``MAX_VIDEO_SECONDS``), ``corrupt`` (decoding failed part way, or no frame decoded),
``truncated`` (the frames end well before the length its header gives: a file cut short).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from facefinder.errors import ImageError
from facefinder.vision.inference import ImageArray

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
DEFAULT_SAMPLE_FPS = 2.0  # frames analysed per second of video (benchmarks/video.py measured the trade-off)
MAX_VIDEO_SECONDS = 4 * 3600  # a longer file is refused as "too-long" (split it first)
MAX_FRAME_PIXELS = 3840 * 2160  # frames are analysed at most at 4K; larger ones are refused
TRUNCATED_SLACK = 2.0  # seconds the frames may end before the length the header gives (5% on long files)
SCENE_CUT = 40.0  # mean absolute difference (0..255) of 32x18 grey thumbnails that counts as a cut
_THUMB = (32, 18)


@dataclass
class VideoInfo:
    """What a video holds, from its header: upright size, length (seconds, 0 when unknown), codec."""

    width: int
    height: int
    duration: float
    codec: str


@dataclass
class Frame:
    """One sampled frame: its time (seconds from the start of the video) and its upright RGB pixels."""

    time: float
    image: ImageArray


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES)


Video = str | os.PathLike | IO[bytes]  # a path, or a file opened for reading (a fenced server source)


def _open(path: Video, source: str):
    """The container and its first video stream, or ImageError saying why not."""
    import av

    if hasattr(path, "seek"):
        path.seek(0)
    try:
        container = av.open(path if hasattr(path, "read") else str(path), metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        if _looks_like_video(path):
            raise ImageError(source, "corrupt", f"a damaged or truncated video ({exc.strerror or exc})") from None
        raise ImageError(source, "not-a-video", f"not a readable video container ({exc.strerror or exc})") from None
    except av.error.FFmpegError as exc:
        raise ImageError(source, "unreadable", str(exc.strerror or exc)) from None
    streams = container.streams.video
    if not streams:
        container.close()
        raise ImageError(source, "not-a-video", "the file holds no video stream")
    stream = streams[0]
    if stream.codec_context is None:
        container.close()
        raise ImageError(source, "unsupported-codec", "no decoder for this video's codec")
    return container, stream


def _looks_like_video(path: Video) -> bool:
    """Whether the file starts like a video container (MP4/MOV, Matroska/WebM, AVI): then a file FFmpeg
    cannot open is damaged (truncated, say), not something else renamed."""
    if hasattr(path, "seek"):
        path.seek(0)
        head = path.read(12)
    else:
        with open(path, "rb") as handle:
            head = handle.read(12)
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head[:4] in (b"\x1aE\xdf\xa3", b"RIFF")


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else 0.0


def _rotation(stream) -> int:
    """Clockwise quarter turns that make the frames upright (the 'rotate' tag of older muxers)."""
    try:
        degrees = int(float(stream.metadata.get("rotate", 0)))
    except ValueError:
        degrees = 0
    return (round(degrees / 90) % 4) if degrees else 0


def _frame_turns(frame, default: int) -> int:
    """Clockwise quarter turns from a frame's display matrix (FFmpeg's convention), else ``default``."""
    from av.sidedata.sidedata import Type

    matrix = frame.side_data.get(Type.DISPLAYMATRIX) if len(frame.side_data) else None
    if matrix is None:
        return default
    m = np.frombuffer(bytes(matrix), dtype="<i4").astype(np.float64)
    # FFmpeg's av_display_rotation_get is minus this angle, and its players turn the picture clockwise by it
    clockwise = math.degrees(math.atan2(m[1] / max(math.hypot(m[1], m[4]), 1), m[0] / max(math.hypot(m[0], m[3]), 1)))
    return round(clockwise / 90) % 4


def probe_video(path: Video, source: str | None = None, max_seconds: float = MAX_VIDEO_SECONDS) -> VideoInfo:
    """A video's header facts, checked against the limits (ImageError, naming ``source``, when it cannot be used)."""
    source = source or str(path)
    container, stream = _open(path, source)
    try:
        return _checked_info(source, container, stream, max_seconds)
    finally:
        container.close()


def _checked_info(source: str, container, stream, max_seconds: float) -> VideoInfo:
    duration = _duration(container, stream)
    if duration > max_seconds:
        raise ImageError(source, "too-long", f"{duration:,.0f} s exceeds the {max_seconds:,.0f}-second cap")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_FRAME_PIXELS:
        raise ImageError(source, "too-large", f"{width}x{height} frames exceed the {MAX_FRAME_PIXELS:,}-pixel cap")
    if _rotation(stream) % 2:
        width, height = height, width
    return VideoInfo(width, height, duration, stream.codec_context.name)


def sample_frames(
    path: Video, fps: float = DEFAULT_SAMPLE_FPS, source: str | None = None, max_seconds: float = MAX_VIDEO_SECONDS
) -> Iterator[Frame]:
    """Upright frames ``1/fps`` seconds apart (by their timestamps), plus the first frame after each
    scene cut. Stops with ImageError "too-long" past ``max_seconds`` even when the header lied."""
    import av

    source = source or str(path)
    container, stream = _open(path, source)
    try:
        info = _checked_info(source, container, stream, max_seconds)
        stream.thread_type = "AUTO"  # frame threads: decoding is most of the cost
        turns, interval, next_time, last, decoded, time = _rotation(stream), 1.0 / fps, 0.0, None, 0, 0.0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                raise ImageError(source, "corrupt", f"decoding failed after {decoded} frames ({exc})") from None
            decoded += 1
            time = float(frame.time) if frame.time is not None else decoded / float(stream.average_rate or 25)
            if time > max_seconds:
                raise ImageError(source, "too-long", f"still playing at {max_seconds:,.0f} s, the cap")
            thumb = frame.reformat(*_THUMB, format="gray").to_ndarray().astype(np.float32)
            cut = last is not None and float(np.abs(thumb - last).mean()) > SCENE_CUT
            last = thumb
            if time + 1e-6 >= next_time or cut:
                next_time = (math.floor(time / interval + 1e-6) + 1) * interval
                image = frame.to_ndarray(format="rgb24")
                k = _frame_turns(frame, turns)
                yield Frame(max(time, 0.0), np.ascontiguousarray(np.rot90(image, -k)) if k else image)
        if not decoded:
            raise ImageError(source, "corrupt", "no frame could be decoded")
        if info.duration and time < info.duration - max(TRUNCATED_SLACK, 0.05 * info.duration):
            raise ImageError(
                source, "truncated", f"the frames end at {time:.1f} s of the {info.duration:.1f} s it claims"
            )
    finally:
        container.close()


def frame_at(path: Video, when: float, source: str | None = None) -> ImageArray:
    """The upright frame shown at ``when`` seconds (the first at or after it, from the keyframe before
    it): what a result from a video points at."""
    import av

    source = source or str(path)
    container, stream = _open(path, source)
    try:
        if stream.time_base:
            container.seek(max(int(when / stream.time_base), 0), stream=stream, backward=True)
        shown = None
        for frame in container.decode(stream):
            shown = frame
            if frame.time is not None and frame.time >= when - 1e-3:
                break
    except av.error.FFmpegError as exc:
        raise ImageError(source, "corrupt", f"no frame at {when:.2f} s ({exc})") from None
    finally:
        container.close()
    if shown is None:
        raise ImageError(source, "corrupt", f"no frame at {when:.2f} s")
    image, k = shown.to_ndarray(format="rgb24"), _frame_turns(shown, _rotation(stream))
    return np.ascontiguousarray(np.rot90(image, -k)) if k else image


CLIP_WIDTH = 640  # clips are re-encoded this wide (H.264, which every browser plays), whatever the source


def clip_mp4(path: Video, start: float, seconds: float, source: str | None = None) -> bytes:
    """``seconds`` of the video from ``start``, re-encoded as a small H.264 MP4 in memory (at most
    CLIP_WIDTH wide, upright, no sound): the moment a result points at, playable in any browser."""
    import io

    import av

    source = source or str(path)
    container, stream = _open(path, source)
    buffer = io.BytesIO()
    try:
        if stream.time_base:
            container.seek(max(int(start / stream.time_base), 0), stream=stream, backward=True)
        rate = round(float(stream.average_rate or 25))
        with av.open(buffer, "w", format="mp4") as out:
            encoder, shown = None, 0
            for frame in container.decode(stream):
                if frame.time is not None and frame.time < start - 1e-3:
                    continue
                if frame.time is not None and frame.time > start + seconds:
                    break
                image = frame.to_ndarray(format="rgb24")
                k = _frame_turns(frame, _rotation(stream))
                image = np.ascontiguousarray(np.rot90(image, -k)) if k else image
                if encoder is None:
                    encoder = _clip_stream(out, image.shape, rate)
                picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(encoder.width, encoder.height)
                picture.pts, shown = shown, shown + 1
                for packet in encoder.encode(picture):
                    out.mux(packet)
            if encoder is not None:
                for packet in encoder.encode():
                    out.mux(packet)
    except av.error.FFmpegError as exc:
        raise ImageError(source, "corrupt", f"no clip at {start:.2f} s ({exc})") from None
    finally:
        container.close()
    return buffer.getvalue()


def _clip_stream(out, shape: tuple[int, ...], rate: int):
    from fractions import Fraction

    height, width = shape[:2]
    scale = min(1.0, CLIP_WIDTH / width)
    stream = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "26"})
    stream.width, stream.height = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
    stream.pix_fmt, stream.time_base = "yuv420p", Fraction(1, rate)
    return stream
