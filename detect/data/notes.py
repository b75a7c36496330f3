"""A log of records read or converted with a change worth knowing: each note counted, with the
first record it happened to. Shared by the training data's segmentation repairs
(`detect.data.segmentation.clean_segmentation`) and the label conversions (`detect.formats`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NoteLog:
    """Records converted with a change worth knowing: note -> count, plus the first case of each."""

    counts: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, note: str, where: str) -> None:
        """Count one record for ``note``; ``where`` names the file and the record."""
        self.counts[note] += 1
        self.first.setdefault(note, where)

    def lines(self) -> list[str]:
        """One line per note: its count, the note and the first case."""
        return [f"{n} x {note} (e.g. {self.first[note]})" for note, n in self.counts.items()]
