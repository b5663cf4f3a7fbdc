"""Progress of long runs, for a person (a terminal bar), for a program (JSON lines), or for nobody.

A run asks a :class:`Reporter` for a :class:`Bar` per loop (``start``), moves it on (``advance``), names
the steps between loops (``phase``) and closes it. Level 0 counts the inputs of a run, level 1 the
tiles (or windows) of the input being segmented. Three reporters:

* :class:`TqdmReporter`: the terminal bars (``tqdm``), as the commands always drew them;
* :class:`JsonReporter`: one JSON object per line on a text stream, for programs that drive the CLI
  (the QGIS plugin); the event schema is documented in ``docs/progress.md``;
* :class:`NullReporter`: nothing.

:func:`as_reporter` turns the ``progress=True/False`` arguments of the library's functions into one.

Steps deep inside the library that take long before any loop starts (loading a model, encoding the
class prompts) are announced with :func:`announce`; they reach the reporter a front end installed
with :func:`reporting` (the CLI's bars or JSON lines, the app's status line), and the log at debug level.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any, Protocol

SCHEMA_VERSION = 1  # "v" of every JSON event; raised when a field changes meaning or goes away
log = logging.getLogger(__name__)


class Bar(Protocol):
    """One loop's progress: ``done`` out of ``total`` ``unit``\\ s."""

    def advance(self, n: int = 1, total: int | None = None) -> None:
        """``n`` more done; ``total`` when it became known or changed."""
        ...

    def current(self, item: str) -> None:
        """The item being worked on now (an input's name)."""
        ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0) -> Bar:
        """A new bar over ``total`` ``unit``\\ s (None: not known yet), ``done`` of them done already."""
        ...

    def phase(self, name: str, item: str = "") -> None:
        """A step of ``item`` that is not counted in units (assembling a scene, writing polygons)."""
        ...

    def message(self, text: str) -> None:
        """A line for the user on stderr that does not break the bars."""
        ...


_CURRENT: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("frugalvl_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Within the block (this thread), :func:`announce` tells ``reporter``."""
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


def announce(name: str, item: str = "") -> None:
    """A long step with no loop of its own (``load``: a model; ``encode``: the class prompts), for the
    reporter of :func:`reporting` and the debug log."""
    log.debug("%s %s", name, item)
    reporter = _CURRENT.get()
    if reporter is not None:
        reporter.phase(name, item)


PHASE_TEXT = {"load": "loading", "encode": "encoding"}  # how a terminal line says a phase


def as_reporter(progress: bool | Reporter | None) -> Reporter:
    """``True``: terminal bars, ``False``/``None``: none, a :class:`Reporter`: itself."""
    if progress is True:
        return TqdmReporter()
    if progress is False or progress is None:
        return NullReporter()
    return progress


# ---------------------------------------------------------------------------------------------
# Nothing
# ---------------------------------------------------------------------------------------------


class _NullBar:
    def advance(self, n: int = 1, total: int | None = None) -> None:
        pass

    def current(self, item: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """No bars; messages still reach stderr."""

    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0) -> Bar:
        return _NullBar()

    def phase(self, name: str, item: str = "") -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Terminal bars
# ---------------------------------------------------------------------------------------------


class _TqdmBar:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, n: int = 1, total: int | None = None) -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
        self.bar.update(n)

    def current(self, item: str) -> None:
        self.bar.set_postfix_str(item, refresh=False)

    def close(self) -> None:
        self.bar.close()


class TqdmReporter:
    """``tqdm`` bars: level 0 stays on screen when done, deeper levels are drawn below it and cleared."""

    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0) -> Bar:
        from tqdm.auto import tqdm

        options: dict[str, Any] = {"total": total, "desc": name, "unit": unit, "position": level}
        if done:
            options["initial"] = done
        if level:
            options["leave"] = False
        return _TqdmBar(tqdm(**options))

    def phase(self, name: str, item: str = "") -> None:
        if name in PHASE_TEXT:  # the long steps before the first bar: a line each, not minutes of silence
            self.message(f"frugalvl: {PHASE_TEXT[name]} {item} ...")
        else:
            log.debug("%s: %s", item, name)

    def message(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------


class _JsonBar:
    def __init__(self, out: JsonReporter, unit: str, total: int | None, name: str, done: int, level: int) -> None:
        self.out, self.unit, self.total, self.name, self.done, self.level = out, unit, total, name, done, level
        self.closed = False
        self._emit("start")

    def _emit(self, event: str, **extra: Any) -> None:
        fields = {"unit": self.unit, "name": self.name, "level": self.level, "done": self.done, "total": self.total}
        self.out.emit(event, **fields, **extra)

    def advance(self, n: int = 1, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += n
        self._emit("advance")

    def current(self, item: str) -> None:
        self._emit("item", item=item)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit("close")


class JsonReporter:
    """One JSON object per line on ``stream`` (flushed at once); the schema is in ``docs/progress.md``.

    A stream that cannot be written any more (the reading program went away) ends the reporting, not
    the run: the run goes on and still writes its outputs.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._broken = False

    def emit(self, event: str, **fields: Any) -> None:
        if self._broken:
            return
        line = json.dumps({"v": SCHEMA_VERSION, "event": event, **fields}, ensure_ascii=False, separators=(",", ":"))
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError) as exc:  # a closed pipe or file
                self._broken = True
                log.warning("progress stream closed (%s); the run goes on without progress events", exc)

    def start(self, unit: str, total: int | None, name: str = "", done: int = 0, level: int = 0) -> Bar:
        return _JsonBar(self, unit, total, name, done, level)

    def phase(self, name: str, item: str = "") -> None:
        self.emit("phase", phase=name, item=item)

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
