"""The command line both chart generators share (dashboards/gen.py, rbac/gen.py): write the
generated file, or with --check exit 1 when the committed one differs from what they render."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(output: Path, text: str, argv: list[str], generator: str) -> int:
    if "--check" in argv:
        if not output.exists() or output.read_text() != text:
            print(f"{output} is stale: run python {generator}", file=sys.stderr)
            return 1
        return 0
    output.write_text(text)
    print(f"wrote {output}")
    return 0
