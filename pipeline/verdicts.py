"""One verdict type for every filter: keep, or drop with a reason *code* from the stage's fixed set and a free-text
detail of what was measured. Funnels count codes, so a reason is one bucket however its figures vary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None = None
    detail: str | None = None


KEEP = Verdict(True)


class Reasons:
    """A stage's fixed set of drop reasons: a code outside it is a bug, caught where the verdict is made."""

    def __init__(self, stage: str, *codes: str) -> None:
        self.stage = stage
        self.codes = frozenset(codes)

    def drop(self, code: str, detail: str | None = None) -> Verdict:
        if code not in self.codes:
            raise ValueError(f"{self.stage} has no drop reason {code!r} (its reasons: {sorted(self.codes)})")
        return Verdict(False, code, detail)
