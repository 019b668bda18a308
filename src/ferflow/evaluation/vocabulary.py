"""The model registry's words, defined once: the aliases a registered version moves
through, the gate's decisions, and the names of the tags ferflow writes on versions.

The gate (ferflow.evaluation.gate) decides, ferflow.tracking.models moves the aliases and
writes the tags, `ferflow compare` and `ferflow runs check` read them: all with these names.
"""

from __future__ import annotations

# Aliases: the version serving, the last one registered, the one before the champion.
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)

# The gate's decision on a registered version.
PROMOTED, NOT_PROMOTED = "promoted", "not-promoted"

# Tags on a registered version.
DECISION_TAG, REASON_TAG = "ferflow.gate.decision", "ferflow.gate.reason"
CHAMPION_BEFORE_TAG = "ferflow.gate.champion_before"  # the champion the gate compared with
ALIAS_TAG = "ferflow.alias"  # the alias a version holds (the registry's aliases, mirrored)
MANUAL_MOVE_TAG, MANUAL_REASON_TAG = "ferflow.manual.move", "ferflow.manual.reason"  # rollback, by hand
