"""Seeds -> mean and standard deviation of each metric (the paper's "mean ± std")."""

from __future__ import annotations

import statistics


def mean_std(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric: mean and sample standard deviation (0 for a single run)."""
    names = runs[0].keys()
    means = {k: statistics.fmean(r[k] for r in runs) for k in names}
    stds = {k: statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for k in names}
    return means, stds


def seeds_result(runs: list[dict], split: str) -> dict:
    """Report entry of a fine-tuned task from its per-seed runs, scored on `split`.

    Metrics are means over seeds (`std` beside them, `per_seed` each); `per_label` is the first seed's.
    """
    metrics, stds = mean_std([r["splits"][split]["metrics"] for r in runs])
    first = runs[0]["splits"][split]
    entry = {
        "metrics": metrics,
        "std": stds,
        "seeds": [r["seed"] for r in runs],
        "per_seed": [r["splits"][split]["metrics"] for r in runs],
        "losses": [r["losses"] for r in runs],
        "n": first["n"],
    }
    if "per_label" in first:
        entry["per_label"] = first["per_label"]
    return entry
