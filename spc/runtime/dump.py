"""SPC_DUMP=dir: write every compilation stage of every kernel to ``dir``."""
from __future__ import annotations

from pathlib import Path

from .. import config


class Dumper:
    """Writes stage files under ``<SPC_DUMP>/<kernel>/``; does nothing when unset."""

    def __init__(self, root: Path | None):
        self.root = root

    @classmethod
    def for_kernel(cls, name: str) -> "Dumper":
        base = config.dump_dir()
        return cls(None if base is None else base / name)

    def write(self, stage: str, text: str) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / stage).write_text(text)
