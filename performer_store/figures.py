"""The report's figures: one function per figure, from tables to a matplotlib Figure, and PNG encoding.

Figures are made with matplotlib's object-oriented API (`matplotlib.figure.Figure`, rendered by Agg), so no
display, no pyplot state and no backend switch are needed. Every function takes plain DataFrames prepared by
`report.py` and never reads the store.
"""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PANEL = (3.6, 2.9)  # inches per panel
DPI = 110
GREY = "0.65"
HSV_COLOR = "#d62728"
LIMIT_LINE = dict(color="0.4", linestyle="--", linewidth=0.8)
FLOOR = -1.0  # r and R2 (and their differences) below this are drawn at it: a few very negative R2s would hide the rest


def to_png(figure: Figure) -> str:
    """The figure as base64-encoded PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def model_colors(models: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per model (tab10, in the given order), shared by every figure."""
    palette = matplotlib.colormaps["tab10"].colors
    return {model: palette[k % len(palette)] for k, model in enumerate(models)}


def panels(rows: int, columns: int, size: tuple[float, float] = PANEL) -> tuple[Figure, np.ndarray]:
    """A figure with a rows x columns grid of axes (always a 2-D array)."""
    figure = Figure(figsize=(size[0] * columns, size[1] * rows), layout="constrained")
    return figure, np.atleast_2d(figure.subplots(rows, columns, squeeze=False))


def identity_line(axes: Axes) -> None:
    """Dashed y = x over the axes' current data range."""
    low = min(axes.get_xlim()[0], axes.get_ylim()[0])
    high = max(axes.get_xlim()[1], axes.get_ylim()[1])
    low, high = low - 0.05 * (high - low), high + 0.05 * (high - low)
    axes.plot([low, high], [low, high], **LIMIT_LINE, zorder=0)
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)


def empty_panel(axes: Axes, text: str) -> None:
    """A panel with nothing to plot: its reason in the middle, no axes."""
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.4", fontsize=9)
    axes.set_axis_off()


def scatter_floored(axes: Axes, x: Sequence[float], y: Sequence[float], **style) -> None:
    """Scatter y against x; points with a value below FLOOR are drawn at FLOOR as down-pointing triangles."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    below = (x < FLOOR) | (y < FLOOR)
    axes.scatter(x[~below], y[~below], **style)
    axes.scatter(np.maximum(x[below], FLOOR), np.maximum(y[below], FLOOR), **{**style, "marker": "v", "label": None})


def label_rows(axes: np.ndarray, labels: Sequence[str], what: str) -> None:
    """Y labels of a grid: the row's label and `what` on the first column, `what` alone elsewhere."""
    for row, label in enumerate(labels):
        for column, ax in enumerate(axes[row]):
            ax.set_ylabel(f"{label}\n{what}" if column == 0 else what, fontsize=8)


# --- 1-3, 10, 11: predictions and their metrics ---------------------------------------------------------


def observed_vs_predicted(points: pd.DataFrame, genes: Mapping[str, str], colors: Mapping[str, tuple]) -> Figure:
    """Grid of genes (rows) x models (columns): predicted (x) vs observed (y) expression of the fold's test people.

    points: gene_id, model, predicted, observed.
    """
    models = list(colors)
    figure, axes = panels(len(genes), len(models), (3.0, 2.6))
    for row, gene_id in enumerate(genes):
        for column, model in enumerate(models):
            ax = axes[row, column]
            part = points[(points["gene_id"] == gene_id) & (points["model"] == model)]
            if len(part) < 3:
                empty_panel(ax, f"{model}: no prediction")
                continue
            ax.scatter(part["predicted"], part["observed"], s=8, alpha=0.6, color=colors[model], linewidths=0)
            r = np.corrcoef(part["predicted"], part["observed"])[0, 1] if part["predicted"].std() > 0 else np.nan
            ax.set_title(f"{model}  r = {r:.2f}  (n = {len(part)})" if np.isfinite(r) else f"{model}  constant prediction", fontsize=9)
            ax.set_xlabel("predicted", fontsize=8, loc="left")  # leaves room for an offset (near-constant predictions)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.get_offset_text().set_fontsize(7)
            ax.tick_params(labelsize=7)
    label_rows(axes, list(genes.values()), "observed")
    return figure


def metric_scatter(table: pd.DataFrame, models: Sequence[str], baseline: str, colors: Mapping[str, tuple]) -> Figure:
    """Per-gene test r and R2 of each model (y) against the baseline's (x), with y = x."""
    figure, axes = panels(1, 2)
    for ax, (metric, name) in zip(axes[0], (("r", "Pearson r"), ("r2", "R2"))):
        for model in models:
            scatter_floored(ax, table[f"{baseline}_{metric}"], table[f"{model}_{metric}"], s=22, alpha=0.8, color=colors[model],
                            label=model, edgecolors="white", linewidths=0.4)
        identity_line(ax)
        ax.set_xlabel(f"{baseline} test {name}")
        ax.set_ylabel(f"model test {name}")
    axes[0, 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return figure


def difference_by_group(table: pd.DataFrame, models: Sequence[str], baseline: str, groups: Sequence[str],
                        colors: Mapping[str, tuple], within: float) -> Figure:
    """R2 minus the baseline's per gene, by the baseline's heritability group: one jittered strip per model, mean as a bar."""
    figure = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        for g, group in enumerate(groups):
            values = table.loc[table["group"] == group, f"{model}_minus_{baseline}_r2"].dropna()
            centre = g - 0.4 + width * (k + 0.5)
            scatter_floored(ax, centre + rng.uniform(-width / 4, width / 4, len(values)), values, s=16, alpha=0.75,
                            color=colors[model], label=model if g == 0 else None, linewidths=0)
            if len(values):
                ax.hlines(max(values.mean(), FLOOR), centre - width / 2.5, centre + width / 2.5, color=colors[model], linewidth=2)
    ax.axhline(0, **LIMIT_LINE)
    ax.axhline(-within, color="0.6", linestyle=":", linewidth=0.8)
    counts = table["group"].value_counts()
    ax.set_xticks(range(len(groups)), [f"{g}\n({counts.get(g, 0)} genes)" for g in groups])
    ax.set_xlabel(f"{baseline} test R2 group")
    ax.set_ylabel(f"R2 minus {baseline} R2")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return figure


def training_curves(curves: pd.DataFrame) -> Figure:
    """Train loss and mean tune R2 per epoch, one line per run, the best epoch starred.

    curves: run, epoch, train_loss, tune_r2, best (bool: the run's best epoch).
    """
    figure, axes = panels(1, 2, (4.6, 3.2))
    colors = model_colors(list(dict.fromkeys(curves["run"])))
    for run, part in curves.groupby("run", sort=False):
        for ax, column in zip(axes[0], ("train_loss", "tune_r2")):
            ax.plot(part["epoch"], part[column], color=colors[run], linewidth=1.2, label=run)
            best = part[part["best"]]
            ax.scatter(best["epoch"], best[column], marker="*", s=90, color=colors[run], zorder=3)
    axes[0, 0].set_ylabel("train loss")
    axes[0, 1].set_ylabel("mean tune R2")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return figure


def multi_vs_single(runs: pd.DataFrame, categories: Sequence[str]) -> Figure:
    """Per-gene test r and R2 of single-gene and multi-gene runs, by category (x); a gene's points are joined.

    runs: gene_id, category (one of `categories`), pearson_r, r2.
    """
    figure, axes = panels(1, 2, (max(3.6, 1.5 * len(categories)), 3.2))
    position = {category: k for k, category in enumerate(categories)}
    rng = np.random.default_rng(0)
    runs = runs.assign(x=runs["category"].map(position) + rng.uniform(-0.08, 0.08, len(runs))).sort_values("x")
    colors = model_colors(list(categories))
    for ax, (metric, name) in zip(axes[0], (("pearson_r", "Pearson r"), ("r2", "R2"))):
        for _, gene in runs.groupby("gene_id"):
            ax.plot(gene["x"], np.maximum(gene[metric], FLOOR), color="0.8", linewidth=0.8, zorder=0)
        for category in categories:
            part = runs[runs["category"] == category]
            scatter_floored(ax, part["x"], part[metric], s=24, alpha=0.85, color=colors[category], linewidths=0)
        ax.axhline(0, **LIMIT_LINE)
        ax.set_xticks(range(len(categories)), categories, fontsize=8)
        ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_ylabel(f"test {name} per gene")
    return figure


# --- 4-9: variant weights --------------------------------------------------------------------------------


def weights_by_position(weights: pd.DataFrame, genes: Mapping[str, str], columns: Mapping[str, str]) -> Figure:
    """Grid of genes (rows) x weights (columns: enet coefficient, each model's ISM score) against TSS distance (kb).

    HSVs of a model are red, its drivers ringed in black.
    """
    figure, axes = panels(len(genes), len(columns), (3.4, 2.5))
    for row, gene_id in enumerate(genes):
        gene = weights[weights["gene_id"] == gene_id]
        for column, (weight, title) in enumerate(columns.items()):
            ax = axes[row, column]
            scored = gene[np.isfinite(gene[weight].to_numpy(np.float64))]
            if scored.empty:
                empty_panel(ax, f"{title}: no weights")
                continue
            model = weight.removeprefix("ism_")
            hsv = scored[f"hsv_{model}"] if f"hsv_{model}" in scored else pd.Series(False, index=scored.index)
            driver = scored[f"driver_{model}"] if f"driver_{model}" in scored else pd.Series(False, index=scored.index)
            kb = scored["tss_distance"] / 1_000
            ax.scatter(kb[~hsv], scored.loc[~hsv, weight], s=6, color=GREY, linewidths=0, label="SNV")
            ax.scatter(kb[hsv], scored.loc[hsv, weight], s=14, color=HSV_COLOR, linewidths=0, label="HSV")
            ax.scatter(kb[driver], scored.loc[driver, weight], s=40, facecolors="none", edgecolors="black",
                       linewidths=0.9, label="driver")
            ax.axvline(0, color="0.8", linewidth=0.6, zorder=0)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("distance to TSS (kb)", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.tick_params(labelsize=7)
    label_rows(axes, list(genes.values()), "weight")
    handles = [matplotlib.lines.Line2D([], [], marker=m, linestyle="", markersize=s, markerfacecolor=f, markeredgecolor=e)
               for m, s, f, e in (("o", 4, GREY, GREY), ("o", 5, HSV_COLOR, HSV_COLOR), ("o", 7, "none", "black"))]
    figure.legend(handles, ["SNV", "HSV", "driver"], loc="outside upper right", ncols=3, fontsize=8)
    return figure


def _bin_label(low: float, high: float, quantity: str) -> str:
    """A short label of a histogram bin [low, high): MAF as given, TSS distance in kb."""
    if quantity == "maf":
        return f"{low:g}-{min(high, 0.5):g}"
    if np.isinf(low):
        return f"< {high / 1000:g}k"
    if np.isinf(high):
        return f">= {low / 1000:g}k"
    return f"{low / 1000:g}k to {high / 1000:g}k"


def grouped_bars(ax: Axes, frame: pd.DataFrame, colors: Mapping[str, tuple]) -> None:
    """Bars of every column of `frame` side by side per row (rows on x), one colour per column."""
    width = 0.8 / max(len(frame.columns), 1)
    for k, column in enumerate(frame.columns):
        ax.bar(np.arange(len(frame)) - 0.4 + width * (k + 0.5), frame[column], width, color=colors[column], label=column)
    ax.set_xticks(range(len(frame)), frame.index)


def flag_distributions(distributions: pd.DataFrame, colors: Mapping[str, tuple]) -> Figure:
    """Share of every SNV, of HSVs and of drivers per MAF bin and per TSS-distance bin.

    distributions: group, quantity, low, high, count, fraction (analysis.distributions).
    """
    sizes = distributions[distributions["quantity"] == "maf"].groupby("group", sort=False)["count"].sum()
    labels = {group: f"{group} ({sizes[group]} SNVs)" for group in colors if sizes.get(group, 0)}
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 2, width_ratios=(1, 1.6))
    for ax, (quantity, name) in zip(axes, (("maf", "minor-allele frequency"), ("tss_distance", "distance to TSS"))):
        part = distributions[(distributions["quantity"] == quantity) & distributions["group"].isin(list(labels))]
        part = part.assign(bin=[_bin_label(lo, hi, quantity) for lo, hi in zip(part["low"], part["high"])])
        table = part.pivot_table(index="bin", columns="group", values="fraction", sort=False)[list(labels)].rename(columns=labels)
        filled = np.flatnonzero(table.fillna(0).to_numpy().any(axis=1))
        table = table.iloc[filled.min():filled.max() + 1] if filled.size else table
        grouped_bars(ax, table, {labels[g]: colors[g] for g in labels})
        ax.set_xlabel(name)
        ax.set_ylabel("share of the group's SNVs")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return figure


def direction_agreement(direction: pd.DataFrame, colors: Mapping[str, tuple]) -> Figure:
    """Per model: share of SNVs whose ISM score has the sign of their elastic-net coefficient, with Fisher's test."""
    figure = Figure(figsize=(7.5, 0.6 + 0.5 * len(direction)), layout="constrained")
    ax = figure.subplots()
    y = np.arange(len(direction))
    ax.barh(y, direction["agreement"].fillna(0), color=[colors[m] for m in direction["model"]])
    for k, row in enumerate(direction.itertuples()):
        ax.text(1.01, k, f"n = {row.variants}, OR = {row.odds_ratio:.2g}, p = {row.p_value:.2g}", va="center", fontsize=8,
                transform=ax.get_yaxis_transform())
    ax.axvline(0.5, **LIMIT_LINE)
    ax.set_yticks(y, direction["model"])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of SNVs with the elastic net's sign (both weights non-zero)")
    return figure


def enrichment_heatmap(enrichment: pd.DataFrame) -> Figure:
    """log2(observed / expected) flagged SNVs per chromatin state (rows) and flag (columns), counts written in."""
    enrichment = enrichment[enrichment.groupby("flag")["observed"].transform("sum") > 0]
    log2 = enrichment.pivot(index="state", columns="flag", values="log2_enrichment")
    observed = enrichment.pivot(index="state", columns="flag", values="observed")
    expected = enrichment.pivot(index="state", columns="flag", values="expected")
    finite = np.where(np.isfinite(log2.to_numpy(float)), log2.to_numpy(float), np.nan)
    bound = max(float(np.nanmax(np.abs(finite))) if np.isfinite(finite).any() else 1.0, 0.5)
    figure = Figure(figsize=(2.2 + 1.5 * len(log2.columns), 1.0 + 0.36 * len(log2)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(finite, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for (i, j), value in np.ndenumerate(observed.to_numpy()):
        dark = abs(finite[i, j]) > 0.6 * bound
        ax.text(j, i, f"{value:.0f} / {expected.iat[i, j]:.1f}", ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    ax.set_xticks(range(len(log2.columns)), log2.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(log2)), log2.index)
    figure.colorbar(image, ax=ax, label="log2(observed / expected)")
    return figure


def motif_rates(rates: pd.DataFrame) -> Figure:
    """Percent of each group's SNVs that break or create a JASPAR motif (the control: random unflagged SNVs)."""
    rates = rates[rates["variants"] > 0]
    table = rates.set_index(rates["group"] + "\n(" + rates["variants"].astype(str) + " SNVs)")[["percent_break", "percent_create"]]
    table.columns = ["breaks a motif", "creates a motif"]
    figure = Figure(figsize=(max(6.0, 1.2 * len(table) + 2), 3.4), layout="constrained")
    ax = figure.subplots()
    grouped_bars(ax, table, {"breaks a motif": "#1f77b4", "creates a motif": "#ff7f0e"})
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("% of SNVs")
    ax.legend(fontsize=8)
    return figure


def auroc_strips(aurocs: Mapping[str, pd.DataFrame], colors: Mapping[str, tuple]) -> Figure:
    """Per variant list (panels) and weight (x): per-gene auROC of |weight| for the listed variants, the mean as a bar."""
    figure, axes = panels(1, len(aurocs), (max(3.6, 1.1 * len(colors) + 1.5), 3.2))
    rng = np.random.default_rng(0)
    for ax, (name, table) in zip(axes[0], aurocs.items()):
        weights = list(dict.fromkeys(table["weight"]))
        for k, weight in enumerate(weights):
            values = table.loc[table["weight"] == weight, "auroc"].dropna()
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(values)), values, s=16, alpha=0.75, color=colors[weight], linewidths=0)
            if len(values):
                ax.hlines(values.mean(), k - 0.3, k + 0.3, color=colors[weight], linewidth=2)
        counts = table.dropna(subset=["auroc"]).groupby("weight")["gene_id"].nunique()
        ax.set_xticks(range(len(weights)), [f"{w}\n({counts.get(w, 0)} genes)" for w in weights], fontsize=8)
        ax.axhline(0.5, **LIMIT_LINE)
        ax.set_xlim(-0.6, len(weights) - 0.4)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("auROC of |weight| per gene")
    return figure


def learning_curves(curves: pd.DataFrame) -> Figure:
    """Mean test r and R2 against the number of train people, one line per run family and gene group.

    curves: family, group, people, pearson_r, r2 (means over genes).
    """
    figure, axes = panels(1, 2, (4.6, 3.2))
    lines = list(dict.fromkeys(zip(curves["family"], curves["group"])))
    colors = model_colors([f"{family}, {group}" for family, group in lines])
    for (family, group), part in curves.groupby(["family", "group"], sort=False):
        label = f"{family}, {group}"
        part = part.sort_values("people")
        for ax, column in zip(axes[0], ("pearson_r", "r2")):
            ax.plot(part["people"], part[column], marker="o", color=colors[label], linewidth=1.2, label=label)
    axes[0, 0].set_ylabel("mean test r")
    axes[0, 1].set_ylabel("mean test R2")
    for ax in axes[0]:
        ax.set_xlabel("train people")
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return figure


# --- 13: mean expression across genes ------------------------------------------------------------------


def reference_vs_mean(points: pd.DataFrame, correlations: pd.DataFrame, colors: Mapping[str, tuple], per_row: int = 4) -> Figure:
    """Per model: each gene's reference-window prediction against its mean expression, with the across-gene Pearson
    and Spearman r in the panel title.

    points: gene_id, model, reference_prediction, mean_expression; correlations: model, genes, pearson_r, spearman_r.
    """
    rows = -(-len(correlations) // per_row)
    figure, axes = panels(rows, min(len(correlations), per_row))
    for ax, row in zip(axes.flat, correlations.itertuples()):
        part = points[points["model"] == row.model]
        ax.scatter(part["mean_expression"], part["reference_prediction"], s=16, color=colors.get(row.model, GREY))
        ax.set_title(f"{row.model}\nr = {row.pearson_r:.2f}, rho = {row.spearman_r:.2f} ({row.genes} genes)", fontsize=8)
        ax.set_xlabel("mean expression", fontsize=8)
        ax.set_ylabel("reference-window prediction", fontsize=8)
    for ax in axes.flat[len(correlations):]:
        ax.set_axis_off()
    return figure
