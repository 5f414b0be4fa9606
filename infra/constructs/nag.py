"""cdk-nag (v2, pinned <3 in pyproject) suppressions and checkov/cfn-lint skips: each carries the reason
it is safe here (tests/infra/test_static_checks.py runs both tools on the synthesised template)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import CfnResource
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


def skip_static_checks(
    scope: IConstruct, reasons: Mapping[str, str], cfn_type: str | None = None
) -> None:
    """Skip checkov (`CKV_*`) and cfn-lint (`W*`/`E*`) checks on `scope`'s CloudFormation resource,
    inline in the template (as cdk-nag suppressions are) and with the reason for each.

    checkov reads `Metadata.checkov.skip[{id, comment}]`; cfn-lint reads
    `Metadata.cfn-lint.config.ignore_checks`, which has no room for a reason, so the reasons of
    those go beside it under `Metadata.lfr.cfn-lint-ignored`. `cfn_type` picks every resource of
    that type under `scope` instead of its default child (e.g. a construct's several functions).
    """
    if not reasons or any(not r.strip() for r in reasons.values()):
        raise ValueError("every skipped static check needs a reason")
    if cfn_type is not None:
        targets = [c for c in scope.node.find_all() if isinstance(c, CfnResource) and c.cfn_resource_type == cfn_type]
    elif isinstance(scope, CfnResource):
        targets = [scope]
    else:
        child = scope.node.default_child
        targets = [child] if isinstance(child, CfnResource) else []
    if not targets:
        raise ValueError(f"no CloudFormation resource to skip checks on under {scope.node.path}")
    checkov = [{"id": k, "comment": v} for k, v in reasons.items() if k.startswith("CKV")]
    lint = {k: v for k, v in reasons.items() if not k.startswith("CKV")}
    for res in targets:
        if checkov:
            skips = [*(res.get_metadata("checkov") or {}).get("skip", []), *checkov]
            res.add_metadata("checkov", {"skip": skips})
        if lint:
            config = (res.get_metadata("cfn-lint") or {}).get("config", {})
            ignored = sorted({*config.get("ignore_checks", []), *lint})
            res.add_metadata("cfn-lint", {"config": {**config, "ignore_checks": ignored}})
            why = {**(res.get_metadata("lfr") or {}).get("cfn-lint-ignored", {}), **lint}
            res.add_metadata("lfr", {"cfn-lint-ignored": why})
