"""cdk-nag (v2, pinned <3 in pyproject) suppressions: each carries the reason it is safe here."""

from __future__ import annotations

from collections.abc import Sequence

from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct


def acknowledge(
    scope: IConstruct, rule_id: str, reason: str, applies_to: Sequence[str | RegexAppliesTo] | None = None
) -> None:
    """Suppress `rule_id` on `scope` and its children, optionally only for the listed findings."""
    NagSuppressions.add_resource_suppressions(
        scope,
        [NagPackSuppression(id=rule_id, reason=reason, applies_to=list(applies_to) if applies_to else None)],
        apply_to_children=True,
    )
