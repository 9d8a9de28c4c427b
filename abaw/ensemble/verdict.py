"""Does the ensemble win? The honest gain, acted on.

The honest (cross-fitted) estimate says whether combining members beats the best single
member with the same post-processing. When the gain is not positive, submitting the
ensemble is a bet against the tool's own estimate, so by default the written predictions
(and so the submission) are the best single member's, post-processed the same way; `keep`
(`abaw ensemble --keep-ensemble`) writes the ensemble anyway. The manifest, the CLI line,
the report and the demo's table all read the verdict from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENSEMBLE, BEST_SINGLE = "ensemble", "best_single"


@dataclass(frozen=True)
class Verdict:
    """The honest comparison and what was written because of it."""

    honest_ensemble: float
    honest_best_single: float
    best_single_member: str
    members: int
    keep: bool = False  # write the ensemble even when it does not win
    used: int = 0  # members with a non-zero weight in the fitted ensemble (0: not known)

    @property
    def gain(self) -> float:
        """Honest ensemble minus honest best single (what combining adds)."""
        return self.honest_ensemble - self.honest_best_single

    @property
    def wins(self) -> bool:
        """Only a positive honest gain counts as a win (a tie is not worth the risk)."""
        return self.gain > 0

    @property
    def alone(self) -> bool:
        """The fitted ensemble put all its weight on one member: nothing was combined, so
        not winning is a tie with a single model, not a loss worth a warning."""
        return self.used == 1 and self.members > 1

    @property
    def written(self) -> str:
        """What the ensemble folder's predictions are: "ensemble" or "best_single".

        One member: the two are the same model, so it stays "ensemble".
        """
        return ENSEMBLE if self.wins or self.keep or self.members == 1 else BEST_SINGLE

    def line(self) -> str:
        """One sentence with both numbers and what was done about them."""
        both = (
            f"honest estimate: ensemble {self.honest_ensemble:.4f} vs best single "
            f"{self.best_single_member} {self.honest_best_single:.4f} (gain {self.gain:+.4f})"
        )
        if self.wins:
            return f"{both}: the ensemble wins; its predictions are written"
        if self.members == 1:
            return f"{both}: one member, nothing to combine; its predictions are written"
        if self.keep:
            return f"{both}: the ensemble does NOT win; written anyway (--keep-ensemble)"
        if self.alone:
            return (
                f"{both}: the ensemble kept one member alone (nothing to combine), so the best "
                "single member (with the same post-processing) is written"
            )
        return (
            f"{both}: the ensemble does NOT win, so the best single member (with the same "
            "post-processing) is written and will be submitted; --keep-ensemble keeps the ensemble"
        )

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's `verdict` entry (plain JSON)."""
        return {
            "honest_gain": self.gain,
            "ensemble_wins": self.wins,
            "written": self.written,
            "best_single_member": self.best_single_member,
            "kept_ensemble": self.keep and not self.wins,
            "members_used": self.used,
            "line": self.line(),
        }


def verdict_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's verdict; derived from its scores for a manifest written before verdicts."""
    if "verdict" in manifest:
        return dict(manifest["verdict"])
    sc = manifest.get("scores", {})
    if "honest_ensemble" not in sc or "honest_best_single" not in sc:
        return {}
    v = Verdict(
        sc["honest_ensemble"],
        sc["honest_best_single"],
        str(sc.get("best_single_member", "?")),
        len(manifest.get("members", [])),
        keep=True,  # an old folder holds the ensemble, whatever it scored
    )
    entry = v.to_manifest()
    if not v.wins:
        entry["line"] = entry["line"].replace(
            "written anyway (--keep-ensemble)", "written (made before abaw acted on it)"
        )
    return entry


def record_written(
    manifest: dict[str, Any],
    verdict: Verdict,
    *,
    written: Any,
    written_score: Any,
) -> None:
    """Put the verdict in the manifest; when the best single is written, say so everywhere.

    `written` is the fitted pipeline whose predictions the folder holds (`Pipeline`), and
    `written_score` its devel `Score`. The ensemble's own weights stay in the manifest as
    `ensemble_weight`, so the record of what lost is not lost.
    """
    manifest["verdict"] = verdict.to_manifest()
    manifest["scores"]["written_devel"] = written_score.value
    if verdict.written == ENSEMBLE:
        return
    share = written.recipe.weights_.sum(axis=1)
    share = share / share.sum() if share.sum() > 0 else share
    for entry, w in zip(manifest["members"], share, strict=True):
        entry["ensemble_weight"] = entry["weight"]
        entry["weight"] = float(w)
    manifest["ensemble_method_used"] = manifest["method_used"]
    manifest["method_used"] = BEST_SINGLE
    manifest["postprocess"] = written.post.to_manifest()
    manifest["per_column"] = written_score.per_column
    manifest.pop("intercept", None)
    manifest["notes"] = [*manifest.get("notes", []), verdict.line()]


def selection_entry(recipe: Any, member_names: list[str]) -> dict[str, Any] | None:
    """Greedy's selection trajectory for the manifest (why each weight is what it is)."""
    sel = getattr(recipe, "selection_", None)
    if not sel or recipe.method_used_ != "greedy":
        return None
    return {
        "start": sel["start"],
        "kept": sel["kept"],
        "steps": [
            {"member": member_names[i], "score": s}
            for i, s in zip(sel["picks"], sel["scores"], strict=True)
        ],
    }
