"""The step-count curve of ``benchmarks/digits.py``: its table, the diagnosis written from the
numbers (fidelity or diversity, where the gap to flow matching Euler 64 closes, the targets),
and the plot of quality against network evaluations (``--plot``).

"Within the spread": two means whose difference is at most the sum of their spreads (their
mean ± sd intervals overlap); the spread of a row is the standard deviation over its draws
(for a single draw: 0, and the standard error over subsets for KID).
"""

from __future__ import annotations

import math
from pathlib import Path

from _digits_quality import stat
from _digits_tables import NAME, cost, find, quality, render

__all__ = ["METHODS", "curve_table", "diagnosis", "plot"]

METHODS = ("NTM multi-T", "NTM multi-T + learned denoiser", "NTM per-T",
           "NTM per-T + learned denoiser", "Gaussian multi-T", "Gaussian per-T",
           "flow matching Euler", "flow matching Heun")
"""The lines of the curve, in table order."""

NOTE = (
    "NFE: network evaluations, those of the predictor (NTM, Gaussian chain) or the velocity "
    "(flow matching), +1 for the learned denoiser (a light MLP: 0.1 of the U-Net's "
    "parameters). \"inverts\": the sampler also inverts the transporter once (2 TarFlow blocks, "
    "each 16 sequential passes over the 2x2 patches with a key/value cache); the learned "
    "denoiser replaces that inversion, the Gaussian chain has none. Heun at NFE n takes n/2 "
    "steps. One denoiser serves the multi-T NTM at every T: it maps u at t_0 to x_0, and "
    "neither its input (the transporter depends on the level time only) nor its target (the "
    "trajectory-Tweedie estimate, whose mean is E[x_0 | x_t0]: the forward chain beyond t_0 "
    "carries no more about x_0) depends on T. The per-T lines' T = 4 points and flow matching "
    "Euler 4 and 64 come from --parts main, the per-T learned T = 4 point from warmstart.")


def lines_of(rows: list[dict]) -> dict[str, list[dict]]:
    """The curve's rows (no guidance) by line, in order of network evaluations."""
    lines: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("method") and r["guidance"] == 0:
            lines.setdefault(r["method"], []).append(r)
    order = [m for m in METHODS if m in lines] + sorted(set(lines) - set(METHODS))
    return {m: sorted(lines[m], key=lambda r: r["nfe"]) for m in order}


def curve_table(rows: list[dict], ref: str) -> list[str]:
    lines = lines_of(rows)
    if not lines:
        return []
    fm64 = find(rows, "flow matching Euler 64")
    before, after = cost(fm64)
    columns = [("line", lambda r: r["method"]), ("T", lambda r: str(r["T"])),
               ("NFE", lambda r: str(r["nfe"])),
               ("inverts", lambda r: "yes" if r["inversion"] else "no"), NAME,
               *before, *quality(ref, fm64), *after[:2]]
    return [*render("digits: quality against network evaluations (the step-count curve)",
                    columns, [r for line in lines.values() for r in line]), "", NOTE]


def _spread(row: dict, metric: str) -> float:
    mean, sd = stat(row, "train", metric)
    if not math.isnan(sd):
        return sd
    return stat(row, "train", "kid_se")[0] if metric == "kid" else 0.0


def _compare(a: dict, b: dict, metric: str) -> tuple[float, float]:
    """``a``'s mean minus ``b``'s, and the sum of their spreads."""
    return (stat(a, "train", metric)[0] - stat(b, "train", metric)[0],
            _spread(a, metric) + _spread(b, metric))


def _pm(row: dict, metric: str, scale: float = 1.0, spec: str = ".2f") -> str:
    return f"{format(stat(row, 'train', metric)[0] * scale, spec)} ± " \
           f"{format(_spread(row, metric) * scale, spec)}"


def _times(d: float, spread: float) -> str:
    return f"{abs(d) / spread:.1f}x the spread" if spread > 0 else "no spread measured"


def _matches(a: dict, b: dict) -> bool:
    """``a`` is no worse than ``b`` beyond the spread, in Frechet distance and KID."""
    return all(d <= s for d, s in (_compare(a, b, m) for m in ("frechet", "kid")))


def _measured(a: dict, b: dict) -> str:
    return (f"Frechet {_pm(a, 'frechet')} vs {_pm(b, 'frechet')}, KID x 1000 "
            f"{_pm(a, 'kid', 1e3, '.1f')} vs {_pm(b, 'kid', 1e3, '.1f')}")


def _gap(line: str, points: list[dict], fm64: dict) -> str:
    """Fidelity or diversity, and where the gap closes, for one NTM line."""
    first = points[0]
    dp, sp = _compare(first, fm64, "precision")
    dr, sr = _compare(first, fm64, "recall")
    behind = {"precision": dp < -sp, "recall": dr < -sr}
    if all(behind.values()):
        more = "precision" if abs(dp) * sr >= abs(dr) * sp else "recall"
        verdict = (f"behind in both, more in {more} (in spreads): the gap is mostly "
                   f"{'fidelity' if more == 'precision' else 'diversity'}")
    elif any(behind.values()):
        verdict = ("behind in precision only: the gap is fidelity" if behind["precision"]
                   else "behind in recall only: the gap is diversity")
    else:
        ahead = [m for m, d, s in (("precision", dp, sp), ("recall", dr, sr)) if d > s]
        verdict = "behind in neither beyond the spread" + (
            f" (ahead in {' and '.join(ahead)})" if ahead else "")
    text = (f"{line} at T = {first['T']}: precision {_pm(first, 'precision', spec='.3f')} vs "
            f"Euler 64's {_pm(fm64, 'precision', spec='.3f')} ({dp:+.3f}, {_times(dp, sp)}), "
            f"recall {_pm(first, 'recall', spec='.3f')} vs {_pm(fm64, 'recall', spec='.3f')} "
            f"({dr:+.3f}, {_times(dr, sr)}): {verdict}.")
    later = [f"T = {r['T']}: precision {_compare(r, fm64, 'precision')[0]:+.3f}, recall "
             f"{_compare(r, fm64, 'recall')[0]:+.3f}" for r in points[1:]]
    if later:
        text += " " + "; ".join(later) + "."
    closed = next((r for r in points if _matches(r, fm64)), None)
    if closed is not None:
        return text + (f" Frechet and KID reach Euler 64's (no worse beyond the spread) from "
                       f"T = {closed['T']} ({_measured(closed, fm64)}).")
    last = points[-1]
    return text + (f" The gap does not close by T = {last['T']} ({_measured(last, fm64)}).")


def _ahead(line: str, points: list[dict], lines: dict[str, list[dict]]) -> str:
    """Whether every point is ahead (lower mean Frechet distance and KID) of Euler and Heun at
    its NFE and of the Gaussian chain of the same kind at its T."""
    gaussian = "Gaussian multi-T" if "multi-T" in line else "Gaussian per-T"
    behind, missing = [], []
    for r in points:
        nfe = r["T"]  # the learned denoiser's extra light evaluation is not counted against it
        rivals = [(f"Euler NFE {nfe}", "flow matching Euler", "nfe", nfe),
                  (f"Heun NFE {nfe}", "flow matching Heun", "nfe", nfe),
                  (f"{gaussian} T = {r['T']}", gaussian, "T", r["T"])]
        lost = []
        for name, rival_line, key, value in rivals:
            rival = next((p for p in lines.get(rival_line, []) if p[key] == value), None)
            if rival is None:
                missing.append(name)
                continue
            worse = [label for m, label in (("frechet", "Frechet"), ("kid", "KID"))
                     if _compare(r, rival, m)[0] >= 0]
            if worse:
                lost.append(f"{name} ({' and '.join(worse)})")
        if lost:
            behind.append(f"at T = {r['T']} behind {', '.join(lost)}")
    if not behind and not missing:
        return f"{line} met"
    return f"{line} not met (" + "; ".join(
        behind + ([f"not measured: {', '.join(missing)}"] if missing else [])) + ")"


def diagnosis(rows: list[dict]) -> list[str]:
    """The paragraph and the target checks of the module docstring, as lines."""
    out = ["", "### digits: diagnosis (generated from the numbers above)", ""]
    fm64, lines = find(rows, "flow matching Euler 64"), lines_of(rows)
    ntm = {m: p for m, p in lines.items() if m.startswith("NTM")}
    if fm64 is None or "train" not in fm64 or not ntm:
        return out + ["Needs flow matching Euler 64 (--parts main) and NTM rows of the curve "
                      "(--parts main, steps), judged against the training images."]
    out += ["Each NTM line against flow matching Euler 64, against the training images "
            "(precision measures fidelity, recall diversity):", ""]
    out += [f"- {_gap(m, p, fm64)}" for m, p in ntm.items()]
    checks = {"T = 8 matches flow matching Euler 64 (Frechet and KID against the training "
              "images, within the spread)": [], "T = 4 within 1.2x of Euler 64's Frechet "
              "distance": [], "at every T ahead of Euler and Heun at equal NFE and of the "
              "Gaussian chain (lower Frechet and KID)": []}
    t8, t4, ahead = checks.values()
    for m, points in ntm.items():
        at = {r["T"]: r for r in points}
        if 8 in at:
            t8.append(f"{m} {'met' if _matches(at[8], fm64) else 'not met'} "
                      f"(measured {_measured(at[8], fm64)})")
        if 4 in at:
            r = stat(at[4], "train", "frechet")[0] / stat(fm64, "train", "frechet")[0]
            t4.append(f"{m} {'met' if r <= 1.2 else 'not met'} (measured {r:.2f}x)")
        ahead.append(_ahead(m, points, lines))
    out += ["", "Targets:", ""] + [f"- {k}: {'; '.join(v) if v else 'not measured'}."
                                   for k, v in checks.items()]
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Frechet distance, KID and precision / recall against the training images, against
    network evaluations (log scale), one line per sampler, error bars the spread over draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = lines_of(rows)
    if not lines:
        raise ValueError("no rows of the step-count curve (--parts steps, main) to plot")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (("frechet", 1.0, "Frechet distance"), ("kid", 1e3, "KID x 1000"))
    for i, (method, points) in enumerate(lines.items()):
        color, style = f"C{i % 10}", "--" if "learned" in method else "-"
        x = [r["nfe"] for r in points]
        for ax, (metric, scale, _) in zip(axes, panels, strict=False):
            means = [stat(r, "train", metric)[0] * scale for r in points]
            errors = [_spread(r, metric) * scale for r in points]
            ax.errorbar(x, means, yerr=errors, color=color, linestyle=style, marker="o",
                        capsize=3, label=method)
        for metric, dash in (("precision", style), ("recall", ":")):
            axes[2].errorbar(x, [stat(r, "train", metric)[0] for r in points],
                             yerr=[_spread(r, metric) for r in points], color=color,
                             linestyle=dash, marker="o" if metric == "precision" else "s",
                             capsize=3)
    titles = [t for _, _, t in panels] + ["precision (o) and recall (s, dotted)"]
    ticks = sorted({r["nfe"] for m, p in lines.items() if "learned" not in m for r in p})
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(f"{title}, against the training images", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
