"""Progress of the benchmark's long loops, on stderr, readable in a terminal and in a log file.

A terminal gets tqdm's bar. Anywhere else (a file, a pipe, a CI log) a bar is one line rewritten
with carriage returns, which a log shows only at the end, if at all; so there every
:data:`EVERY` items (or after :data:`QUIET_S` seconds without a line, for slow items), and at the
end, a plain line with the count and the elapsed time is written and flushed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Items between two plain progress lines (the last item always gets one).
EVERY = 10
#: Seconds after which an item gets a line even between two of :data:`EVERY`.
QUIET_S = 30.0


def progress(
    items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None, every: int = EVERY, unit: str = "img", stream=None
) -> Iterator[T]:
    """``items``, reporting progress on ``stream`` (default: stderr) as they are consumed."""
    stream = stream or sys.stderr
    if not enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if _is_terminal(stream):
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit, file=stream)
        return
    start = last = time.perf_counter()
    n = shown = 0
    of = f"/{total}" if total is not None else ""
    note(f"{desc}: 0{of} {unit}", stream)
    for n, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if n % every == 0 or n == total or now - last >= QUIET_S:
            note(f"{desc}: {n}{of} {unit} in {now - start:.0f} s", stream)
            shown, last = n, now
    if n != shown:  # the end of an iterable of unknown length
        note(f"{desc}: {n}{of} {unit} in {time.perf_counter() - start:.0f} s", stream)


def note(line: str, stream=None) -> None:
    """One progress line on ``stream`` (default: stderr), flushed at once."""
    stream = stream or sys.stderr
    print(line, file=stream, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
