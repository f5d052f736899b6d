"""What one episode in the simulated robot came to: the score and, when recorded, the recording."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EpisodeResult:
    index: int
    seed: int
    success: bool  # reached the folded state at any time during the episode
    progress: float  # at the end
    duration_s: float  # simulated seconds
    recorded: str = ""  # episode name returned by the recorder, if any
    completion_s: float | None = None  # simulated seconds from the episode's start
    notes: list[str] = field(default_factory=list)
