"""Microsoft's bandwidth figures per media stream, for planning (kbit/s, each direction).

Restated from the project's reference notes (``office365-traffic.md``, "Bandwidth per
stream, for planning"), which cite Microsoft's network planning guidance for Teams and
the Skype for Business bandwidth calculator. Kept as data: the report cites
:data:`SOURCE` next to every figure it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEVELS", "PLANNING_SCENARIO", "RULE_OF_THUMB", "SOURCE", "TEAMS", "StreamFigure",
           "figure_for"]

SOURCE = ("Microsoft's network planning guidance for Teams (bandwidth per modality) and "
          "the Skype for Business provisioning rule of thumb, as restated in the project "
          "reference office365-traffic.md (\"Bandwidth per stream, for planning\")")

LEVELS = ("minimum", "recommended", "best")


@dataclass(frozen=True)
class StreamFigure:
    """One row of the Teams table: kbit/s per stream, (upload, download) per level."""

    category: str
    scenario: str
    minimum: tuple[int, int]
    recommended: tuple[int, int]
    best: tuple[int, int]

    def kbps(self, level: str, direction: str) -> int:
        pair: tuple[int, int] = getattr(self, level)
        return pair[0] if direction == "upload" else pair[1]


#: Teams, per modality and scenario (kbit/s per stream, each direction).
TEAMS = (
    StreamFigure("audio", "1:1 or meeting", (10, 10), (58, 58), (76, 76)),
    StreamFigure("video", "1:1", (150, 150), (1500, 1500), (4000, 4000)),
    StreamFigure("video", "meeting", (150, 200), (2500, 4000), (4000, 4000)),
    StreamFigure("desktop-sharing", "1:1", (200, 200), (1500, 1500), (4000, 4000)),
    StreamFigure("desktop-sharing", "meeting", (250, 250), (2500, 2500), (4000, 4000)),
)

#: The scenario the bottom-up projection plans for: meetings need at least as much
#: as 1:1 calls, so planning for them does not under-size the link.
PLANNING_SCENARIO = {"audio": "1:1 or meeting", "video": "meeting",
                     "desktop-sharing": "meeting"}

#: Skype for Business provisioning rule of thumb (kbit/s per stream); streams can
#: burst to about 3x.
RULE_OF_THUMB = {"audio": 65, "video": 500}


def figure_for(category: str) -> StreamFigure:
    """The Teams row the bottom-up projection uses for a media category."""
    scenario = PLANNING_SCENARIO[category]
    for row in TEAMS:
        if row.category == category and row.scenario == scenario:
            return row
    raise KeyError(category)  # pragma: no cover - the table covers every media category
