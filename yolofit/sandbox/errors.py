"""The one error type the sandbox raises: a one-line reason plus, where a component
or a build step failed, the tail of its log and the log's path."""

from __future__ import annotations

from pathlib import Path


class SandboxError(Exception):
    """A failure the user can act on. `str()` is the reason, then the log tail."""

    def __init__(self, reason: str, log_path: Path | None = None, tail_lines: int = 20) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_path = log_path
        self.log_tail = read_tail(log_path, tail_lines) if log_path else ""

    def __str__(self) -> str:
        if not self.log_path:
            return self.reason
        return f"{self.reason}\n--- last lines of {self.log_path} ---\n{self.log_tail}".rstrip()


def read_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note when there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    return "\n".join(data.splitlines()[-lines:]) or "(log is empty)"
