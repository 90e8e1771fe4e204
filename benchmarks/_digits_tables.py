"""Tables of ``benchmarks/digits.py --print``: saved results (one file, or several files of one
configuration merged) as markdown. Results written before ``--parts`` (one draw per row, the
Frechet distance to the held-out images only) print with the columns they have."""

from __future__ import annotations

import math
from collections.abc import Callable

from _digits_quality import stat

__all__ = ["NAME", "SHARED", "cost", "find", "held_out", "merge", "metrics", "quality",
           "quality_ref", "render", "tables"]

SHARED = ("steps", "batch_size", "lr", "shift", "seed", "per_class", "draws", "particles",
          "bits_points", "fm_steps", "denoiser_steps", "device")
"""Options that must agree between files merged into one set of tables."""

DASH = "—"
Column = tuple[str, Callable[[dict], str]]


def merge(saved: list[dict]) -> dict:
    """Results files of one configuration (``--parts`` run in separate processes) as one:
    their rows, the parts and seconds of each. Raises ``ValueError`` for files of different
    options (:data:`SHARED`) or classifiers, a part in two files, or results written before
    ``--parts``."""
    if len(saved) == 1:
        return saved[0]
    if any("parts" not in s for s in saved):
        raise ValueError("results written before --parts print alone, one file at a time")
    for key in SHARED:
        values = {repr(s["config"].get(key)) for s in saved}
        if len(values) > 1:
            raise ValueError(f"cannot merge results of different --{key.replace('_', '-')}: "
                             f"{sorted(values)}")
    if len({repr(s["classifier"]["recipe"]) for s in saved}) > 1:
        raise ValueError("cannot merge results judged by different classifiers")
    parts = [p for s in saved for p in s["parts"]]
    if len(parts) != len(set(parts)):
        raise ValueError(f"a part is in two files: {parts}")
    return dict(saved[0], parts=parts, total_s=sum(s["total_s"] for s in saved),
                runs=[dict(parts=s["parts"], total_s=s["total_s"]) for s in saved],
                results=[r for s in saved for r in s["results"]])


def find(rows: list[dict], model: str, guidance: float = 0.0) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["guidance"] == guidance), None)


def fmt(v: float | None, spec: str) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def pm(value: tuple[float, float] | None, spec: str, scale: float = 1.0) -> str:
    """``mean ± sd`` (the mean alone for one draw)."""
    if value is None:
        return DASH
    mean, sd = value
    text = format(mean * scale, spec)
    return text if math.isnan(sd) else f"{text} ± {format(sd * scale, spec)}"


def ratio(v: float | None, ref: float | None) -> str:
    return DASH if v is None or not ref else f"{v / ref:.2f}x"


def quality_ref(rows: list[dict]) -> str:
    """``"train"`` where the rows were judged against the training images, else ``"held"``
    (results written before --parts)."""
    return "train" if any("train" in r for r in rows) else "held"


def mean(row: dict | None, ref: str | None, metric: str) -> float | None:
    value = None if row is None else stat(row, ref, metric)
    return None if value is None else value[0]


def kid(row: dict, ref: str) -> str:
    """KID x 1000, mean ± sd over draws; for one draw, ± its standard error over subsets."""
    value = stat(row, ref, "kid")
    if value is not None and math.isnan(value[1]):
        return f"{value[0] * 1e3:.1f} ± {stat(row, ref, 'kid_se')[0] * 1e3:.1f} (se)"
    return pm(value, ".1f", 1e3)


def metrics(ref: str, suffix: str = "") -> list[Column]:
    """Frechet distance, KID, precision and recall against ``ref``."""
    return [(f"Frechet{suffix}", lambda r: pm(stat(r, ref, "frechet"), ".2f")),
            (f"KID x 1000{suffix}", lambda r: kid(r, ref)),
            (f"precision{suffix}", lambda r: pm(stat(r, ref, "precision"), ".3f")),
            (f"recall{suffix}", lambda r: pm(stat(r, ref, "recall"), ".3f"))]


def quality(ref: str, base: dict | None, vs: str = "FM-64") -> list[Column]:
    """:func:`metrics` against ``ref`` with the Frechet distance's ratio to the row ``base``."""
    columns = metrics(ref)
    columns.insert(1, (f"Frechet vs {vs}", lambda r: ratio(mean(r, ref, "frechet"),
                                                          mean(base, ref, "frechet"))))
    return columns


def cost(fm64: dict | None, bits_vs: dict | None = None) -> tuple[list[Column], list[Column]]:
    """Training and likelihood columns (with ``bits_vs``, the NSF row or ``{}``, the bits/dim
    ratio to it); accuracy and sampling-time columns."""
    before = [("steps", lambda r: str(r["steps"])),
              ("train s", lambda r: fmt(r.get("train_s"), ".0f")),
              ("bits/dim", lambda r: fmt(r.get("bits"), ".3f"))]
    if bits_vs is not None:
        before.append(("bits/dim vs NSF", lambda r: ratio(r.get("bits"), bits_vs.get("bits"))))
    after = [("accuracy", lambda r: pm(stat(r, None, "accuracy"), ".1%")),
             ("sample s/1000", lambda r: fmt(r["sample_s"], ".3f")),
             ("sample time vs FM-64", lambda r: ratio(r["sample_s"], (fm64 or {}).get(
                 "sample_s")))]
    return before, after


def render(title: str, columns: list[Column], rows: list[dict]) -> list[str]:
    """A markdown table under ``### title`` (nothing without rows); columns empty in every row
    are left out."""
    if not rows:
        return []
    cells = [[fn(r) for _, fn in columns] for r in rows]
    keep = [j for j in range(len(columns)) if j == 0 or any(c[j] != DASH for c in cells)]
    return ["", f"### {title}", "", "| " + " | ".join(columns[j][0] for j in keep) + " |",
            "|" + "---|" * len(keep),
            *("| " + " | ".join(c[j] for j in keep) + " |" for c in cells)]


def references(saved: dict) -> list[dict]:
    if "references" in saved:
        return saved["references"]
    floor = saved["floor"]  # results written before --parts: one reference row
    return [dict(model=f"training images ({floor['n']})", held=dict(frechet=[floor["frechet"]]),
                 accuracy=[floor["accuracy"]])]


NAME: Column = ("model", lambda r: r["model"])


def tables(saved: dict) -> list[str]:
    """The reference, main, guidance, warm-start and predictor tables of the saved (or
    merged) results, as lines."""
    rows, ref = saved["results"], quality_ref(saved["results"])
    fm64, nsf = find(rows, "flow matching Euler 64"), find(rows, "zuko NSF (same time)")
    out = [f"Classifier: held-out accuracy {saved['classifier']['accuracy']:.1%}."]
    if "parts" in saved:
        c = saved["config"]
        out.append(f"Sample quality: {c['draws']} draws of {10 * c['per_class']} samples "
                   f"({c['per_class']} per class) per row, each judged in the classifier's 64 "
                   "features against the 1497 training images (the field's reference) and the "
                   "300 held-out images: Frechet distance, KID x 1000 (10 disjoint subsets; on "
                   "the features divided by their root mean square), "
                   "precision and recall (k = 3), accuracy; cells are mean ± sd over draws.")
    out += render("digits: reference rows (real images as samples: each metric's floor)",
                  [("real images", lambda r: r["model"]), *metrics("train", " (train)"),
                   *metrics("held", " (held-out)"),
                   ("accuracy", lambda r: pm(stat(r, None, "accuracy"), ".1%"))],
                  references(saved))
    before, after = cost(fm64, nsf or {})
    params: Column = ("params", lambda r: f"{r['params']:,}")
    where = "training" if ref == "train" else "held-out"
    out += render(f"digits: likelihood and samples (no guidance; quality against the {where} "
                  "images)", [NAME, params, *before, *quality(ref, fm64), *after],
                  [r for r in rows if r["table"] == "main" and r["guidance"] == 0])
    guided = {r["model"] for r in rows if r["guidance"] > 0}
    order = list(dict.fromkeys(r["model"] for r in rows))
    out += render("digits: classifier-free guidance w",
                  [NAME, ("w", lambda r: f"{r['guidance']:g}"),
                   *quality(ref, fm64, "FM-64 (w=0)"), *after[:2]],
                  sorted((r for r in rows if r["model"] in guided
                          and r["table"] in ("main", "guidance")),
                         key=lambda r: (order.index(r["model"]), r["guidance"])))
    warm = [r for r in rows if r["table"] in ("warm_start", "issue5")]  # issue5: older results
    if warm:
        tuned = [r for r in warm if r["model"].startswith(("NTM T=4 from", "NTM T=4 scratch"))]
        refs = [r for m in ("NTM T=4", "flow matching Euler 4", "flow matching Euler 64")
                if (r := find(rows, m)) is not None]
        out += render("digits: warm start from flow matching, and denoisers",
                      [NAME, *cost(fm64)[0], *quality(ref, fm64), *after],
                      tuned + refs + [r for r in warm if r not in tuned])
    transformer = [r for r in rows if r["table"] == "predictors"]
    if transformer:
        unet = find(rows, "NTM T=4")
        out += render("digits: transformer vs U-Net predictor (NTM T=4)",
                      [NAME, ("predictor params", lambda r: f"{r['predictor_params']:,}"),
                       params, *before[:2], ("s/step", lambda r: fmt(r["train_s"] / r["steps"],
                                                                      ".3f")),
                       before[2], *quality(ref, unet, "U-Net"), *after[:2]],
                      ([unet] if unet else []) + transformer)
    return out


def held_out(saved: dict) -> list[str]:
    """Every row without guidance against the held-out images (none for results written before
    --parts: their main table is against the held-out images)."""
    rows = [r for r in saved["results"] if r["guidance"] == 0 and "held" in r]
    if not rows:
        return []
    return render("digits: against the held-out images (memorisation shows here)",
                  [NAME, *quality("held", find(rows, "flow matching Euler 64"))], rows)
