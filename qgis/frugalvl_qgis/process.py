"""Run a ``frugalvl`` command (``segment``, ``change``) with ``--progress json`` as a subprocess and relay
it to a Processing feedback.

JSON lines on stderr (docs/progress.md) move the progress bar; every other line goes to the Processing
log verbatim (``frugalvl: error: ...`` as an error). Cancel sends an interrupt (then terminates), and the
tiles done so far stay in the work folder, so the same run started again resumes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any

from .settings import child_environment

# share of the bar for the tiles; the steps after them (assembly, overlay, polygons) fill the rest
PHASE_PERCENT = {"plan": 1.0, "assemble": 90.0, "overlay": 93.0, "vectors": 95.0, "write": 90.0}


class ProgressState:
    """Turns progress events into a percentage and a text line."""

    def __init__(self) -> None:
        self.inputs_done, self.inputs_total = 0, 1
        self.inner = 0.0  # fraction of the current input done
        self.phase_floor = 0.0
        self.text = ""

    def percent(self) -> float:
        within = max(self.inner * 90.0, self.phase_floor) / 100.0
        return min(100.0, 100.0 * (self.inputs_done + within) / max(1, self.inputs_total))

    def update(self, event: dict[str, Any]) -> None:
        kind, level = event.get("event"), event.get("level", 0)
        done, total = event.get("done") or 0, event.get("total")
        if kind == "phase":
            self.phase_floor = PHASE_PERCENT.get(event.get("phase", ""), self.phase_floor)
            self.text = f"{event.get('item', '')}: {event.get('phase')}"
        elif level == 0 and kind in ("start", "advance", "close"):
            self.inputs_done, self.inputs_total = done, total or 1
            if kind == "advance":
                self.inner = self.phase_floor = 0.0
        elif level == 0 and kind == "item":
            self.text = str(event.get("item", ""))
        elif level >= 1 and kind in ("start", "advance") and total:
            self.inner = done / total
            self.text = f"{event.get('name', '')}: {done}/{total} {event.get('unit', '')}s"


def parse_event(line: str) -> dict[str, Any] | None:
    """The progress event a line holds, or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event and "v" in event else None


def _pump(stream, tag: str, q: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        q.put((tag, line.rstrip("\r\n")))
    q.put((tag, None))


class Cancelled(Exception):
    """The user pressed Cancel; the process was stopped."""


class Failed(Exception):
    """frugalvl exited with an error; the message is its error line."""


def run(argv: list[str], feedback: Any, poll: float = 0.1) -> list[str]:
    """Run ``argv`` to the end, relaying it to ``feedback``; returns stdout's lines.

    Raises :class:`Cancelled` after Cancel, :class:`Failed` with frugalvl's error line on a non-zero exit.
    """
    feedback.pushCommandInfo(" ".join(_quote(a) for a in argv))
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        encoding="utf-8", errors="replace", bufsize=1, env=child_environment(),
    )  # fmt: skip
    q: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(s, t, q), daemon=True)
        for s, t in ((proc.stdout, "out"), (proc.stderr, "err"))
    ]
    for r in readers:
        r.start()
    state = ProgressState()
    errors: list[str] = []
    stdout: list[str] = []
    open_streams = 2
    cancelled = False
    while open_streams:
        if feedback.isCanceled() and not cancelled:
            cancelled = True
            feedback.pushInfo("Cancel: stopping frugalvl; finished tiles are kept and a rerun resumes")
            _stop(proc)
        try:
            tag, line = q.get(timeout=poll)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
            continue
        event = parse_event(line) if tag == "err" else None
        if event is not None:
            state.update(event)
            feedback.setProgress(state.percent())
            if state.text:
                feedback.setProgressText(state.text)
        elif line.startswith(("frugalvl: error:", "frugalvl: failed:", "frugalvl: skipped:")):
            errors.append(line)
            feedback.reportError(line, False)
        elif tag == "out":
            stdout.append(line)
            feedback.pushConsoleInfo(line)
        elif line.strip():
            feedback.pushInfo(line)
    code = proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if cancelled or feedback.isCanceled():
        raise Cancelled("frugalvl was cancelled; the tiles it finished are kept: run it again to resume")
    if code != 0:
        raise Failed(errors[-1] if errors else f"frugalvl exited with status {code} (see the log above)")
    return stdout


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Interrupt (as Ctrl+C: frugalvl ends cleanly), then terminate, then kill."""
    if proc.poll() is not None:
        return
    if os.name == "posix":
        proc.send_signal(signal.SIGINT)
    else:
        proc.terminate()
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg) if os.name == "posix" else (f'"{arg}"' if " " in arg else arg)
