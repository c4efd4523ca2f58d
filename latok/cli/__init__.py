"""The ``latok`` command line: parsing and dispatch, one module per command group.

``codec`` (encode, decode, export, info, roundtrip, demo, backends), ``evaluation`` (eval, bench),
``training`` (cache-latents, train), ``corpus`` (corpus encode, corpus info); ``options`` holds what they share.

Commands import what they need when they run, so ``latok --help`` stays fast.
Expected failures (:class:`~latok.errors.LatokError`) print one line and exit 2;
nothing partial is left at output paths.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import contextmanager

from latok import __version__
from latok.cli import codec, corpus, evaluation, training
from latok.cli.options import EXIT_ERROR
from latok.errors import LatokError

logger = logging.getLogger("latok")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latok",
        description="Adaptive video tokenization over a frozen video autoencoder.",
    )
    parser.add_argument("--version", action="version", version=f"latok {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    codec.add_file_commands(commands)
    codec.add_measure_commands(commands)
    training.add_commands(commands)
    evaluation.add_commands(commands)
    corpus.add_commands(commands)
    return parser


def _rebind_library_handlers() -> None:
    """Point the console handlers Lightning installs on import at the current stderr: when
    ``main`` runs inside a longer-lived process (tests, notebooks), the stderr they were
    bound to may have been replaced and closed since."""
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "lightning"]:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
                with handler.lock:  # not setStream(): it flushes the old stream, which may be closed
                    handler.stream = sys.stderr


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latok`` script; returns the exit status (callable from tests)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s", force=True
    )
    _rebind_library_handlers()
    try:
        with _terminate_as_interrupt():
            return args.run(args) or 0
    except LatokError as error:
        print(f"latok: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except _Terminated:
        print("latok: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("latok: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `latok info x.latok | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except OSError as error:  # the system refused mid-way (disk full, a file vanished): outputs are atomic
        where = f"{error.filename}: " if error.filename else ""
        print(f"latok: error: {where}{error.strerror or _one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(error: BaseException) -> str:
    """The error's message as one line.  An error re-raised from a DataLoader worker carries the
    worker's traceback in its message: its last line is the original message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "Original Traceback" in str(error):
        return (
            lines[-1].split(": ", 1)[-1] if lines[-1].startswith(("latok.errors.", type(error).__name__)) else lines[-1]
        )
    return lines[0]


class _Terminated(BaseException):
    """SIGTERM, raised where the process is so that every writer's cleanup runs, as for Ctrl-C."""


@contextmanager
def _terminate_as_interrupt():
    def terminate(signum, frame):
        raise _Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
