"""Running an operation over many files: input discovery, output mirroring, failures, summary.

Folders in, mirrored tree out: for a folder INPUT each file goes to ``OUTDIR/<path relative to
INPUT>``; a file INPUT goes to ``OUTDIR/<its name>``. One bad file never stops the run.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from .errors import RefacexError
from .image_io import IMAGE_SUFFIXES

R = TypeVar("R")


@dataclass(frozen=True)
class Job:
    """One input file and the path its output would take (before any format change); ``tag``:
    what the caller knows the file by (e.g. a FiftyOne sample id)."""

    src: Path
    rel: Path
    dst: Path | None
    tag: str = ""


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    no_face: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    # what a command said about each face (e.g. "authenticated"), in the order it first counted them
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def line(self, verb: str = "processed") -> str:
        said = ", ".join(f"{n} {what}" for what, n in self.counts.items() if n)
        return (
            f"{self.images} image(s) {verb}, {self.faces} face(s)"
            + (f" ({said})" if said else "")
            + f", {self.no_face} without a face, "
            + (f"{self.skipped} already done (skipped), " if self.skipped else "")
            + f"{len(self.failed)} failed"
        )


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the files whose path relative to their input root
    hashes to it. The hash is of the path alone (SHA-256 of its NFC-normalised POSIX form), not
    of a position in a listing, so every machine running ``I/N`` over the same tree, mounted
    anywhere, takes the same files, and files added later change no other file's shard.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with ``1 <= I <= N``; anything else is a :class:`RefacexError` saying why."""
        m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text or "")
        if not m:
            raise RefacexError(f"--shard {text!r}: give I/N, this machine's shard I of N (e.g. 1/4)")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 1 <= index <= count:
            raise RefacexError(f"--shard {text!r}: I must be between 1 and N, and N at least 1 (shards are numbered 1 to N)")
        return cls(index, count)

    def holds(self, rel: Path | str) -> bool:
        return shard_of(rel, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(rel: Path | str, count: int) -> int:
    """The shard (1 to ``count``) of a file by its path ``rel`` relative to its input root."""
    text = unicodedata.normalize("NFC", Path(rel).as_posix())
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def iter_jobs(inputs: Iterable[str | Path], outdir: Path | None, recursive: bool = False, shard: Shard | None = None) -> Iterator[Job]:
    """Expand files and folders into jobs; ``outdir=None`` means in place (``dst = src``).

    Files named explicitly are always tried (a non-image gives a clear error later); inside folders
    only image suffixes are picked, and the output folder itself is never descended into. With a
    ``shard``, only the jobs whose ``rel`` (path relative to the input folder, or a file input's
    name) falls in it.
    """
    for job in _all_jobs(inputs, outdir, recursive):
        if shard is None or shard.holds(job.rel):
            yield job


def _all_jobs(inputs: Iterable[str | Path], outdir: Path | None, recursive: bool) -> Iterator[Job]:
    out_resolved = outdir.resolve() if outdir is not None else None
    seen: set[Path] = set()
    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            pattern = root.rglob("*") if recursive else root.glob("*")
            files = sorted(p for p in pattern if p.is_file() and _is_image_name(p))
            nested_out = out_resolved is not None and out_resolved != root.resolve()
            for p in files:
                if nested_out and out_resolved in p.resolve().parents:
                    continue  # our own earlier outputs inside the input tree
                rel = p.relative_to(root)
                yield from _job(p, rel, outdir, seen)
        else:
            yield from _job(root, Path(root.name), outdir, seen)


def folder_without_work(root: Path, recursive: bool) -> str | None:
    """Why the folder ``root`` gives :func:`iter_jobs` no image (a run over it would do nothing
    and say nothing), or None when it has images to work on."""

    def has_image(paths) -> bool:
        return any(_is_image_name(p) and p.is_file() for p in paths)

    if has_image(root.rglob("*") if recursive else root.glob("*")):
        return None
    if not recursive and has_image(root.rglob("*")):
        return "no images at its top level, only in sub-folders; add -r to take them"
    return "no images in this folder or its sub-folders"


def _job(src: Path, rel: Path, outdir: Path | None, seen: set[Path]) -> Iterator[Job]:
    key = src.resolve()
    if key in seen:
        return
    seen.add(key)
    yield Job(src=src, rel=rel, dst=src if outdir is None else outdir / rel)


def default_workers() -> int:
    """Files worked on at once by default: one per usable CPU core, at most 4 (each holds its image
    and the networks' activations in memory)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def run_jobs(
    jobs: list[Job],
    work: Callable[[Job], R],
    finish: Callable[[Job, R, Summary], None] = lambda job, result, summary: None,
    progress: bool | None = None,
    desc: str = "refacex",
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    workers: int = 1,
) -> Summary:
    """Call ``work(job)`` for each job on up to ``workers`` threads (decoding, inference and writing
    of different files overlap; the networks and the detector release the GIL), then
    ``finish(job, result, summary)`` on the calling thread, in job order. At most ``workers + 1``
    jobs are in flight, so memory stays bounded on large folders. An exception from either is
    logged as one line and recorded, and the run goes on. ``progress=None`` shows a bar when
    stderr is a terminal.
    """
    summary = Summary()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not show or len(jobs) < 2, file=sys.stderr, dynamic_ncols=True)

    def done(job: Job, outcome: Callable[[], R]) -> None:
        try:
            finish(job, outcome(), summary)
            summary.images += 1
        except Exception as exc:  # one bad file never stops the run
            msg = str(exc) if isinstance(exc, RefacexError) else f"unexpected {type(exc).__name__}: {exc}"
            msg = msg.splitlines()[0] if msg else type(exc).__name__
            if not msg.startswith(str(job.src)):
                msg = f"{job.src}: {msg}"
            summary.failed.append((str(job.src), msg))
            (bar.write if show else log)(f"error: {msg}")
        bar.update(1)
        if show:
            bar.set_postfix(faces=summary.faces, failed=len(summary.failed), refresh=False)

    try:
        if workers <= 1:
            for job in jobs:
                done(job, lambda job=job: work(job))
            return summary
        with share_cores(workers), ThreadPoolExecutor(workers, thread_name_prefix="refacex") as pool:
            pending: deque[tuple[Job, Future]] = deque()
            try:
                for job in jobs:
                    pending.append((job, pool.submit(work, job)))
                    if len(pending) > workers:
                        done(*_oldest(pending))
                while pending:
                    done(*_oldest(pending))
            finally:  # interrupted: files not started are not started; running ones finish their atomic writes
                for _, fut in pending:
                    fut.cancel()
        return summary
    finally:
        bar.close()


@contextmanager
def share_cores(workers: int):
    """PyTorch's intra-op threads split among the workers for the run (each network call gets its
    share of the cores instead of all of them contending)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _oldest(pending: deque) -> tuple[Job, Callable]:
    job, fut = pending.popleft()
    return job, fut.result
