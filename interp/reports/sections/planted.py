"""Section ``planted``: on a toy zoo model, what the report found against the planted mechanism.

The toy's ``manifest.json`` lists its planted heads and their roles (measured by intervention
when the toy was built). This section compares them with the roles the ``heads`` section's rule
assigned on the toy's own task data (the manifest's generator; the induction control is that data
too): a planted head is *found* when its rule-based roles include the planted role, *missed*
otherwise; a head with a role that the manifest does not plant is *extra*. A head whose output
weights are (nearly) zero (‖W_V W_O‖_F below 2 % of the largest: a head pruned or sparsified away in training) is
*inert*: its attention pattern is still computed, but it writes nothing, so no role is given to
it and none is counted.
"""

from __future__ import annotations

from typing import Any

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section
from interp.types import Model

#: manifest role -> roles of interp.heads.classify_heads that realise it
ROLE_MAP: dict[str, tuple[str, ...]] = {
    "previous_token": ("previous-token",),
    "induction": ("induction",),
    "backcopy_sink": ("first-token",),
    "pruned": (),
}
INERT_REL = 0.02


def _expected(role: str) -> tuple[str, ...]:
    if role.startswith("offset_"):
        return (f"offset-{role.split('_', 1)[1]}",) if role.split("_", 1)[1] != "1" else ("previous-token",)
    return ROLE_MAP.get(role, (role.replace("_", "-"),))


def inert_heads(model: Model) -> set[str]:
    """Heads whose ‖W_V W_O‖_F is below ``INERT_REL`` of the model's largest (they write ~nothing)."""
    import torch

    from interp.zoo._train import head_ov_norms

    with torch.no_grad():
        n = head_ov_norms(model.original_model)
    top = float(n.max())
    return {f"L{l}H{h}" for l in range(n.shape[0]) for h in range(n.shape[1]) if float(n[l, h]) < INERT_REL * top}


def compare(classes: list[Any], manifest: dict[str, Any], inert: set[str]) -> dict[str, Any]:
    """Found / missed / extra, from head classes and the manifest's planted heads."""
    roles = {c.name: list(c.roles) for c in classes}
    planted = [h for h in manifest.get("heads", []) if h.get("role") != "pruned"]
    pruned = {h["label"] for h in manifest.get("heads", []) if h.get("role") == "pruned"}
    found, missed = [], []
    for h in planted:
        want = _expected(h["role"])
        got = roles.get(h["label"], [])
        (found if any(w in got for w in want) else missed).append(
            {"head": h["label"], "planted": h["role"], "expected": list(want), "roles": got})
    planted_labels = {h["label"] for h in planted}
    extra = []
    for name, rs in roles.items():
        if name in inert or not rs:
            continue
        if name not in planted_labels:
            extra.append({"head": name, "roles": rs, "pruned_in_manifest": name in pruned})
        else:
            want = set(next(_expected(h["role"]) for h in planted if h["label"] == name))
            more = [r for r in rs if r not in want]
            if more:
                extra.append({"head": name, "roles": more, "pruned_in_manifest": False, "also_planted": True})
    return {"found": found, "missed": missed, "extra": extra, "inert": sorted(inert),
            "pruned_in_manifest": sorted(pruned),
            "roles_on_pruned_heads": [e for e in extra if e["pruned_in_manifest"]]}


@section("planted", "Planted mechanism (toy models)",
         "On a toy zoo model: the heads the report found against the heads planted in its manifest "
         "(found / missed / extra), on the toy's own task data.", requires=("interp.heads",), order=90)
def run(ctx: ReportContext) -> SectionOutput:
    from interp import zoo
    from interp.reports.sections._util import head_scan

    if ctx.model_name not in zoo.TOY_MODELS:
        raise SectionSkipped(f"{ctx.model_name} is not a toy zoo model (no planted mechanism to compare with)")
    man = zoo.manifest(ctx.model_name)
    res = head_scan(ctx).heads
    inert = inert_heads(ctx.model)
    cmp = compare(res.classes, man, inert)
    rows = [[r["head"], r["planted"], "found", ", ".join(r["roles"])] for r in cmp["found"]]
    rows += [[r["head"], r["planted"], "missed", ", ".join(r["roles"]) or "(no role)"] for r in cmp["missed"]]
    rows += [[r["head"], "—", "extra", ", ".join(r["roles"])] for r in cmp["extra"]]
    rows += [[h, "pruned" if h in cmp["pruned_in_manifest"] else "—", "inert (writes 0; no role)", ""]
             for h in cmp["inert"]]
    n_pl = len(cmp["found"]) + len(cmp["missed"])
    notes = [f"{len(cmp['found'])} of {n_pl} planted heads found, {len(cmp['missed'])} missed, "
             f"{len(cmp['extra'])} extra role(s); {len(cmp['inert'])} inert head(s) "
             f"({', '.join(cmp['inert']) or 'none'}) are given no role. Measured on {res.n_prompts} examples of "
             f"the toy's task ({man.get('task', {}).get('generator')})."]
    return SectionOutput(data={"manifest_heads": man.get("heads", []), **cmp},
                         tables=[Table("planted heads versus the report's findings",
                                       ["head", "planted role", "verdict", "roles found"], rows)], notes=notes)
