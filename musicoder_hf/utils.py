"""Small helpers shared across the package: atomic writes, seeds derived from values, and thread limits."""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits
from transformers import HfArgumentParser


def derive_seed(*parts, bits: int = 63) -> int:
    """A seed of `bits` bits (at most 64) hashed from `parts` (integers or strings): the same parts always give the
    same seed, on every machine and Python version (unlike `hash`). The default 63 bits fit `torch.manual_seed`."""
    digest = hashlib.sha256(",".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - bits)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path in the same folder; when the block succeeds, the file is
    renamed to `path`, so that a reader (or a run killed mid-write) never sees half a file. If the block raises, the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, payload, **dumps_kwargs) -> None:
    """Write `payload` as JSON atomically (see `atomic_write_text`); values JSON does not know are written as text."""
    dumps_kwargs = {"indent": 2, "default": str, **dumps_kwargs}
    atomic_write_text(path, json.dumps(payload, **dumps_kwargs) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder atomically: yields a temporary sibling folder; when the block succeeds, it replaces `path`.

    If the block raises, `path` is left as it was and the temporary folder is removed.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(temporary, path)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """
    One thread for torch and for the BLAS libraries (numpy's and scipy's OpenBLAS, which librosa's filterbank products
    use) in this process, restored afterwards: for worker processes that already share the cores. Each BLAS library
    otherwise starts a thread per core in every worker, and the workers' threads then spin against each other.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default, and the description (a usage example) as written."""


def command_line_parser(arguments_class, description: str | None = None, prog: str | None = None) -> HfArgumentParser:
    """
    The parser of every command of the package and of `training/`: an `HfArgumentParser` over one dataclass of
    arguments (underscore option names, as transformers' examples; each field's `help` metadata and default in
    `--help`). Read it with `parse_command_line`. Exit codes of the commands: 0 success (and `--help`), 2 bad usage
    (argparse's errors, unknown options included), 1 failure with a message naming the problem.
    """
    return HfArgumentParser(arguments_class, prog=prog, description=description, formatter_class=_HelpFormatter)


def parse_command_line(parser: HfArgumentParser, argv=None):
    """The dataclass of `parser` filled from `argv` (default: `sys.argv[1:]`). Unlike
    `HfArgumentParser.parse_args_into_dataclasses`, an unknown option is a usage error (exit 2), not a `ValueError`."""
    (arguments_class,) = parser.dataclass_types
    return arguments_class(**vars(parser.parse_args(argv)))


__all__ = [
    "atomic_directory",
    "atomic_file",
    "atomic_write_text",
    "command_line_parser",
    "derive_seed",
    "parse_command_line",
    "single_threaded",
    "write_json",
]
