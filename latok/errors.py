"""Exceptions raised by latok.

Every error a user can cause (bad path, unreadable file, wrong tensor shape,
missing weights) is a :class:`LatokError`.  The CLI prints its message as one
line and exits non-zero; library users can catch the whole family at once.
"""

from __future__ import annotations


class LatokError(Exception):
    """Base class for every expected, user-facing latok error."""


class VideoReadError(LatokError):
    """A video file or frame folder could not be read."""


class VideoNotFoundError(VideoReadError, FileNotFoundError):
    """The path does not exist."""


class NotAVideoError(VideoReadError):
    """The path exists but is not a video latok can decode."""


class EmptyVideoError(VideoReadError):
    """The video decodes to zero frames (or the requested range is empty)."""


class CorruptVideoError(VideoReadError):
    """The container opened but the stream failed to decode."""


class FrameSizeError(VideoReadError):
    """Frame sizes change in the middle of the stream."""


class OutputError(LatokError):
    """An output path cannot be written: a directory, not writable, or one of the command's inputs."""


class VideoWriteError(OutputError):
    """An output video could not be written."""


class WeightsNotFoundError(LatokError, FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable."""


class WeightsChecksumError(LatokError):
    """A weights file does not match its published sha256."""


class CorruptWeightsError(LatokError):
    """A checkpoint exists but cannot be read or does not fit its model."""


class LatokFormatError(LatokError):
    """A ``.latok`` file is truncated, corrupt, or of an unknown format or version."""


class ClipTooLargeError(LatokFormatError):
    """A well-formed ``.latok`` file declares a clip too large to hold and decode at once (stream it instead)."""


class ShardFormatError(LatokError):
    """A training shard holds a member latok does not write, or one it cannot read."""


class InvalidInputError(LatokError, ValueError):
    """A tensor or argument has the wrong shape, dtype, range or value."""


class UnknownBackendError(LatokError, KeyError):
    """No VAE backend is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line
        return str(self.args[0]) if self.args else ""
