"""`pstore report`: one self-contained HTML page (`index.html`) with the method's figures rebuilt from a store.

Every figure is an embedded base64 PNG (matplotlib, Agg) with a one-line caption saying what to read from it;
the page loads nothing from the network. A figure whose inputs the store lacks is replaced by a line saying
what is missing and which command adds it. The numbers come from the library, not from new code:
`compare.compare_models` (the per-gene table, identical to `pstore compare`), `analysis.variant_weights` and
`analysis.summarize` (variant weights, HSVs, drivers and their summaries), the results' predictions, and each
Performer run's `metrics.jsonl` and `run.json` (found through the results' `runs` attribute).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import __version__, figures, schemas
from .analysis import compute, ism_model_names, read_variant_list, recovery_auroc, summarize, variant_weights
from .compare import GROUP_NAMES, WITHIN, Comparison, compare_models, fold_metrics, model_summary
from .inputs import make_directory, require_file
from .reference import across_genes, mean_expression, reference_predictions
from .results import read_result, replace_atomically
from .store import Store

BASELINE = "enet"
DEFAULT_GENES = 4  # genes of the per-gene figures when none are chosen
NO_ISM = "no ISM scores in this store for fold {fold}; run `pstore ism`"


class MissingData(Exception):
    """What a figure needs is not in the store (or was not given); the message says how to add it."""


@dataclass(frozen=True)
class Section:
    """One figure of the page: anchor id, title, caption, and either its PNG (base64) or why it is missing."""

    id: str
    title: str
    caption: str
    png: str | None = None
    missing: str | None = None


@dataclass
class ReportInputs:
    """The store, the fold and the optional variant lists of a report; each table is read once, when first needed."""

    store: Store
    fold: int
    chosen: Sequence[str] = ()
    finemapped: Path | None = None
    states: Path | None = None
    truth: Path | None = None

    @cached_property
    def folds(self) -> pd.DataFrame:
        """Every result's test r and R2 per gene and fold (compare.fold_metrics)."""
        return fold_metrics(self.store)

    @cached_property
    def in_fold(self) -> pd.DataFrame:
        """The report fold's rows of `folds`."""
        return self.folds[self.folds["fold"] == self.fold]

    @cached_property
    def colors(self) -> dict[str, tuple]:
        """A colour per model: the baseline first, then every other result or ISM model by name."""
        models = sorted({*self.folds["model"], *self.ism_models}, key=lambda m: (m != BASELINE, m))
        return figures.model_colors(models)

    @cached_property
    def comparison(self) -> Comparison:
        """`pstore compare`'s tables (all folds), or MissingData without elastic-net results."""
        if not (self.folds["model"] == BASELINE).any():
            raise MissingData(f"no {BASELINE} results in this store; run `pstore enet --store {self.store.path}`")
        return compare_models(self.store.path, baseline=BASELINE)

    @cached_property
    def genes(self) -> dict[str, str]:
        """The genes of the per-gene figures (chosen, or those with the most models scored) -> labels."""
        ids = list(self.chosen) or default_genes(self.in_fold, list(self.store.genes.index))
        return {g: gene_label(self.store, g) for g in ids}

    @cached_property
    def weights(self) -> pd.DataFrame:
        """The fold's variant-weights table of every gene (analysis.variant_weights)."""
        return compute(variant_weights(self.store.path, self.fold)).reset_index(drop=True)

    @cached_property
    def ism_models(self) -> list[str]:
        """Models with ISM scores in the fold."""
        return ism_model_names(self.weights)

    @cached_property
    def summary(self) -> dict[str, pd.DataFrame]:
        """analysis.summarize's tables of the fold (chromatin states when given), or MissingData without ISM scores."""
        if not self.ism_models:
            raise MissingData(NO_ISM.format(fold=self.fold))
        return summarize(self.store.path, self.fold, states=self.states, weights=self.weights)

    @cached_property
    def performer_runs(self) -> pd.DataFrame:
        """Per gene and Performer result of the fold: run directory, genes it trained on (run.json), test r and R2."""
        rows = []
        for row in self.in_fold[self.in_fold["kind"] == "performer"].itertuples():
            run = read_result(self.store.path, row.gene_id, row.model)[1].get("runs", {}).get(str(self.fold))
            trained = run_genes(Path(run)) if run else None
            rows.append({"gene_id": row.gene_id, "model": row.model, "run": run, "trained": trained,
                         "pearson_r": row.pearson_r, "r2": row.r2})
        return pd.DataFrame(rows, columns=["gene_id", "model", "run", "trained", "pearson_r", "r2"])


def gene_label(store: Store, gene_id: str) -> str:
    """A gene's name and ID, e.g. 'LDHC (ENSG00000166796.12)'."""
    return f"{store.genes.loc[gene_id, 'gene_name']} ({gene_id})"


def default_genes(in_fold: pd.DataFrame, store_genes: list[str], count: int = DEFAULT_GENES) -> list[str]:
    """Genes with the most models scored in the fold, then the best test r of a model other than the baseline."""
    scored = in_fold[in_fold["pearson_r"].notna()]
    if scored.empty:
        return store_genes[:count]
    models = scored.groupby("gene_id")["model"].nunique()
    best = scored[scored["model"] != BASELINE].groupby("gene_id")["pearson_r"].max().reindex(models.index).fillna(-np.inf)
    ranked = pd.DataFrame({"models": models, "best": best}).sort_values(["models", "best"], ascending=False)
    return list(ranked.index[:count])


def run_genes(run: Path) -> list[str] | None:
    """The genes a run trained on, from its run.json (None when the run directory is not here)."""
    path = run / "run.json"
    return json.loads(path.read_text())["genes"] if path.is_file() else None


def read_metrics(run: Path) -> pd.DataFrame | None:
    """A run's metrics.jsonl (epoch, train_loss, tune_r, tune_r2, best_epoch, ...), or None when absent."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


# --- one function per figure: the data it needs, then figures.py draws it ------------------------------


def figure_observed(inputs: ReportInputs) -> Figure:
    """Observed vs predicted expression of the fold's test people, per chosen gene and model."""
    test = inputs.store.split(inputs.fold) == schemas.SPLIT_CODES["test"]
    models = sorted(set(inputs.in_fold["model"]), key=lambda m: (m != BASELINE, m))
    if not models:
        raise MissingData(f"no model results for fold {inputs.fold}; run `pstore enet`, `pstore evaluate`")
    points = []
    for gene_id in inputs.genes:
        observed = inputs.store.gene(gene_id)["target"][:][test]
        for model in models:
            found = read_result(inputs.store.path, gene_id, model)
            if found is None:
                continue
            predicted = found[0]["prediction"][inputs.fold][test]
            keep = np.isfinite(observed) & np.isfinite(predicted)
            points.append(pd.DataFrame({"gene_id": gene_id, "model": model, "predicted": predicted[keep], "observed": observed[keep]}))
    if not points:
        raise MissingData(f"none of the genes {', '.join(inputs.genes)} has results; choose others with --gene")
    return figures.observed_vs_predicted(pd.concat(points), inputs.genes, {m: inputs.colors[m] for m in models})


def other_models(comparison: Comparison) -> list[str]:
    """Models compared with the baseline (those with a `<model>_minus_<baseline>_r2` column)."""
    suffix = f"_minus_{BASELINE}_r2"
    return [c[: -len(suffix)] for c in comparison.table.columns if c.endswith(suffix)]


def compared(inputs: ReportInputs) -> tuple[pd.DataFrame, list[str]]:
    """The comparison table and the models in it besides the baseline, or MissingData when there are none."""
    models = other_models(inputs.comparison)
    if not models:
        raise MissingData(f"only {BASELINE} results in this store; add models with `pstore evaluate`")
    return inputs.comparison.table, models


def figure_metrics(inputs: ReportInputs) -> Figure:
    """Per-gene r and R2 of every model against the elastic net's."""
    table, models = compared(inputs)
    return figures.metric_scatter(table, models, BASELINE, inputs.colors)


def figure_groups(inputs: ReportInputs) -> Figure:
    """R2 difference to the elastic net by the elastic net's R2 group."""
    table, models = compared(inputs)
    return figures.difference_by_group(table, models, BASELINE, GROUP_NAMES, inputs.colors, WITHIN)


def figure_weights(inputs: ReportInputs) -> Figure:
    """Elastic-net coefficients and ISM scores against TSS distance for the chosen genes, HSVs and drivers marked."""
    weights = inputs.weights[inputs.weights["gene_id"].isin(list(inputs.genes))]
    columns = {"enet_coefficient": "enet coefficient", **{f"ism_{m}": f"ISM {m}" for m in inputs.ism_models}}
    columns = {c: t for c, t in columns.items() if np.isfinite(weights[c].to_numpy(np.float64)).any()}
    if not any(c.startswith("ism_") for c in columns):
        raise MissingData(NO_ISM.format(fold=inputs.fold))
    return figures.weights_by_position(weights, inputs.genes, columns)


def flag_colors(groups: Sequence[str]) -> dict[str, tuple]:
    """Colours of the groups of SNVs (all, hsv_<model>, driver_<model>, control): grey, then one per group."""
    palette = figures.model_colors([g for g in groups if g not in ("all", "control")])
    return {g: (0.6, 0.6, 0.6) if g in ("all", "control") else palette[g] for g in groups}


def figure_distributions(inputs: ReportInputs) -> Figure:
    """MAF and TSS-distance distributions of every SNV, HSVs and drivers."""
    table = inputs.summary["distributions"]
    return figures.flag_distributions(table, flag_colors(list(dict.fromkeys(table["group"]))))


def figure_direction(inputs: ReportInputs) -> Figure:
    """Sign agreement of ISM scores with elastic-net coefficients."""
    direction = inputs.summary["direction"]
    if not (direction["variants"] > 0).any():
        raise MissingData(f"no SNV has both a non-zero ISM score and a non-zero {BASELINE} coefficient in fold {inputs.fold}; "
                          f"run `pstore enet --folds {inputs.fold}`")
    return figures.direction_agreement(direction, inputs.colors)


def figure_enrichment(inputs: ReportInputs) -> Figure:
    """Chromatin-state enrichment of HSVs and drivers."""
    if inputs.states is None:
        raise MissingData("no chromatin states given; pass --states BED (chrom, start, end, state)")
    enrichment = inputs.summary["enrichment"]
    if enrichment.empty or not enrichment["observed"].any():
        raise MissingData("no HSV or driver lies in a state of the BED")
    return figures.enrichment_heatmap(enrichment)


def figure_motifs(inputs: ReportInputs) -> Figure:
    """Motif break and create rates of HSVs, drivers and random unflagged SNVs."""
    return figures.motif_rates(inputs.summary["motif_rates"])


def figure_auroc(inputs: ReportInputs) -> Figure:
    """Per-gene auROC of |weight| for fine-mapped eQTLs and, on simulated cohorts, the causal variants."""
    lists = {name: path for name, path in (("fine-mapped eQTLs", inputs.finemapped), ("causal variants (truth table)", inputs.truth))
             if path is not None}
    if not lists:
        raise MissingData("no variant list given; pass --finemapped TSV (and --truth TSV on simulated cohorts)")
    aurocs = {name: recovery_auroc(inputs.weights, read_variant_list(path)) for name, path in lists.items()}
    if all(table["auroc"].isna().all() for table in aurocs.values()):
        raise MissingData("no gene has both listed and unlisted SNVs with a weight in this fold")
    return figures.auroc_strips(aurocs, inputs.colors)


def figure_training(inputs: ReportInputs) -> Figure:
    """Train loss and tune R2 per epoch of every Performer run of the fold."""
    runs = inputs.performer_runs.dropna(subset=["run"]).drop_duplicates("run")
    curves = []
    for row in runs.itertuples():
        metrics = read_metrics(Path(row.run))
        if metrics is not None and len(metrics):
            curves.append(metrics.assign(run=Path(row.run).name, best=metrics["epoch"] == metrics["best_epoch"].iloc[-1]))
    if not curves:
        where = ", ".join(sorted(set(runs["run"]))[:3]) or "none recorded"
        raise MissingData(f"no metrics.jsonl of a Performer run of fold {inputs.fold} is here (run directories: {where}); "
                          "train with `pstore train` and score with `pstore evaluate`")
    return figures.training_curves(pd.concat(curves, ignore_index=True))


def run_category(gene_id: str, trained: list[str]) -> str:
    """Where a gene's result comes from: a single- or multi-gene run, trained on the gene (HOP) or not (HOGP)."""
    return f"{'single' if len(trained) == 1 else 'multi'}-gene run\n{'HOP' if gene_id in trained else 'HOGP'}"


def figure_multi(inputs: ReportInputs) -> Figure:
    """Per-gene test r and R2 of single-gene runs, and of multi-gene runs on their genes and on unseen genes."""
    runs = inputs.performer_runs.dropna(subset=["trained"])
    runs = runs.assign(category=[run_category(g, t) for g, t in zip(runs["gene_id"], runs["trained"])])
    kinds = {category.split("-")[0] for category in runs["category"]}
    if kinds != {"single", "multi"}:
        raise MissingData(f"needs single-gene and multi-gene Performer runs of fold {inputs.fold} with their run directories "
                          "here (`pstore train --gene G` and `pstore train --genes FILE`, then `pstore evaluate`)")
    order = [f"{kind}-gene run\n{setting}" for kind, setting in (("single", "HOP"), ("multi", "HOP"), ("multi", "HOGP"), ("single", "HOGP"))]
    return figures.multi_vs_single(runs, [c for c in order if c in set(runs["category"])])


RUN_FAMILY = r"^(?P<family>performer(?:_multi)?)(?:_frac(?P<fraction>[0-9.]+))?$"  # names `pstore run` gives


def figure_learning(inputs: ReportInputs) -> Figure:
    """Learning curves: mean test r and R2 of Performer runs against their number of train people, per gene group."""
    folds = inputs.in_fold
    names = folds["model"].str.extract(RUN_FAMILY)
    runs = folds.assign(family=names["family"], fraction=names["fraction"].astype(float).fillna(1.0)).dropna(subset=["family"])
    if not (runs.groupby("family")["fraction"].nunique() >= 2).any():
        raise MissingData(f"needs Performer runs of fold {inputs.fold} on at least two train fractions "
                          "(`train_fractions` in `pstore run`, or `pstore train --train-fraction F --name performer_fracF`)")
    table = inputs.comparison.table.set_index("gene_id")
    n_train = int((inputs.store.split(inputs.fold) == 0).sum())
    runs = runs.assign(group=table["group"].reindex(runs["gene_id"]).to_numpy(), people=(runs["fraction"] * n_train).round())
    curves = runs.groupby(["family", "group", "people"], as_index=False)[["pearson_r", "r2"]].mean()
    return figures.learning_curves(curves)


def figure_mean(inputs: ReportInputs) -> Figure:
    """Reference-window predictions against mean expression across genes, per model (reference.py)."""
    if not mean_expression(inputs.store).notna().any():
        raise MissingData("no mean expression in this store; build it with `pstore build --mean-expression TSV` "
                          "(gene_id, mean_expression; `pstore simulate` writes mean_expression.tsv)")
    points = reference_predictions(inputs.store, inputs.fold).dropna(subset=["mean_expression"])
    if points.empty:
        raise MissingData(f"no reference-window predictions for fold {inputs.fold}; run `pstore evaluate --reference --base` "
                          "and `pstore evaluate --reference --run RUN`")
    return figures.reference_vs_mean(points, across_genes(points), inputs.colors)


class FigureSpec(NamedTuple):
    """A figure of the page: anchor (fig-<id>), title, one-line caption, and the function that draws it."""

    id: str
    title: str
    caption: str
    draw: Callable[[ReportInputs], Figure]


FLOORED = f"values below {figures.FLOOR:g} sit at {figures.FLOOR:g} as triangles"
FIGURES: tuple[FigureSpec, ...] = tuple(FigureSpec(*spec) for spec in (
    ("observed", "Observed vs predicted expression",
     "Each point is a test person of the fold: the closer to a line, the better the model ranks people; "
     "base Enformer predicts CAGE counts, so read its shape, not its scale.", figure_observed),
    ("metrics", "Per-gene r and R2 against the elastic net",
     "Points above the dashed y = x line are genes where a model beats the elastic net (means over folds, as in `pstore compare`; "
     f"{FLOORED}).",
     figure_metrics),
    ("groups", "Difference to the elastic net by heritability group",
     f"R2 minus the elastic net's per gene, by the elastic net's R2 group; bars are means, the dotted line is -{WITHIN} "
     f"(the paper's 'as good' margin): Performer should match the elastic net where it predicts well ({FLOORED}).", figure_groups),
    ("weights", "Variant weights around the TSS",
     "Elastic-net coefficients and ISM scores (ALT - REF; only SNVs inside the model's window have one) by distance to "
     "the TSS for the chosen genes: HSVs (red) are the top |ISM| SNVs, as many as the elastic net keeps; drivers "
     "(rings) explain the model's prediction.", figure_weights),
    ("distributions", "MAF and TSS distance of HSVs and drivers",
     "Share of each group's SNVs per bin: flagged SNVs skewed to common alleles or to the TSS show what a model relies on.",
     figure_distributions),
    ("direction", "Direction agreement with the elastic net",
     "Share of SNVs (non-zero in both) where the ISM score has the elastic net's sign; above 0.5 with a small Fisher p "
     "means the models agree on which allele raises expression.", figure_direction),
    ("enrichment", "Chromatin-state enrichment",
     "log2(observed / expected) HSVs and drivers per state (cells: observed / expected counts); red states hold more "
     "flagged SNVs than their share of the windows.", figure_enrichment),
    ("motifs", "Motif disruption",
     "Percent of SNVs that break or create a JASPAR motif (p < 5e-5): flagged SNVs above the random control "
     "point at regulatory sequence.", figure_motifs),
    ("auroc", "Recovery of fine-mapped and causal variants",
     "Per-gene auROC of |weight| for the listed variants; 0.5 (dashed) is chance, higher means the weight ranks them first.",
     figure_auroc),
    ("training", "Training curves",
     "Train loss and mean tune R2 per epoch of each Performer run (legend: run directory; star: the best epoch, whose "
     "checkpoint is evaluated); a tune R2 that peaks early and falls means overfitting.", figure_training),
    ("multi", "Multi-gene vs single-gene training",
     "Each point is a gene scored by a run trained on it alone, by a multi-gene run trained on it (HOP) or by one that "
     f"never saw it (HOGP; the paper found these near r = 0); lines join a gene's runs ({FLOORED}).", figure_multi),
    ("learning", "Learning curves",
     "Mean test r and R2 of Performer runs trained on nested shares of the train people, by the elastic net's R2 group: "
     "where the curve flattens, more people add little (the paper: ~250 people suffice).", figure_learning),
    ("mean", "Mean expression across genes",
     "Each point is a gene: its reference window's prediction against its mean expression across people; base Enformer "
     "should track it (r > 0), while models fine-tuned on per-gene normalized targets lose that across-gene signal.",
     figure_mean),
))


def render_section(number: int, spec: FigureSpec, inputs: ReportInputs) -> Section:
    """Draw one figure, or record why it cannot be drawn from this store."""
    title = f"{number}. {spec.title}"
    try:
        figure = spec.draw(inputs)
    except MissingData as missing:
        return Section(f"fig-{spec.id}", title, spec.caption, missing=str(missing))
    return Section(f"fig-{spec.id}", title, spec.caption, png=figures.to_png(figure))


# --- the page --------------------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; } figure { margin: 0; } figure img { max-width: 100%; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
.missing { background: #fff6e0; border: 1px solid #e8c66a; padding: 0.6em; }
.meta { color: #555; } nav a { margin-right: 0.8em; }
"""


def format_number(value: object) -> str:
    """Floats as `pstore compare` prints them (4 decimals, NaN), everything else as text."""
    if isinstance(value, (float, np.floating)):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def html_table(frame: pd.DataFrame, identifier: str) -> str:
    """A DataFrame as an HTML table, numbers formatted like `pstore compare`'s output."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_number(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table id="{identifier}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def header(inputs: ReportInputs) -> str:
    """Store summary, models present, and the per-gene comparison table (or why there is none)."""
    store, split = inputs.store, inputs.store.split(inputs.fold)
    counts = {name: int((split == code).sum()) for name, code in schemas.SPLIT_CODES.items()}
    facts = {"store": str(store.path.resolve()), "tissue": store.attrs.get("tissue"), "people": len(store.sample_id),
             "genes": len(store.genes), "window": f"{store.window:,} bp", "folds": store.root["sample_split"].shape[0],
             f"fold {inputs.fold} people": ", ".join(f"{n} {name}" for name, n in counts.items()),
             "models with ISM scores": ", ".join(inputs.ism_models) or "none"}
    parts = ["<table id=\"store-summary\">" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                                                   for k, v in facts.items()) + "</table>"]
    models = model_summary(store.path)
    parts.append("<h2>Models</h2>" + (html_table(models, "models") if len(models) else
                                      '<p class="missing">no model results in this store; run `pstore enet`, `pstore evaluate`</p>'))
    parts.append("<h2>Per gene (as <code>pstore compare</code>)</h2>")
    try:
        parts += [html_table(inputs.comparison.table, "compare-table"), "<h3>Per model</h3>",
                  html_table(inputs.comparison.summary, "compare-summary")]
    except MissingData as missing:
        parts.append(f'<p class="missing">{html.escape(str(missing))}</p>')
    return "\n".join(parts)


def section_html(section: Section) -> str:
    """One figure block: title, image (or the missing-data note) and caption."""
    body = (f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{section.png}">' if section.png
            else f'<p class="missing">{html.escape(section.missing or "")}</p>')
    return (f'<figure id="{section.id}"><h2>{html.escape(section.title)}</h2>{body}'
            f"<figcaption>{html.escape(section.caption)}</figcaption></figure>")


def render_page(inputs: ReportInputs, sections: Sequence[Section]) -> str:
    """The whole page: header, a table of contents, then every figure; no external resources."""
    name = html.escape(inputs.store.path.name)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    contents = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Performer report: {name}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>Performer report: {name}</h1>"
            f'<p class="meta">fold {inputs.fold}; made by pstore {__version__} on {created}</p>\n{header(inputs)}\n'
            f"<h2>Figures</h2><nav>{contents}</nav>\n" + "\n".join(section_html(s) for s in sections) + "\n</body></html>\n")


def check_inputs(store: Store, fold: int, genes: Sequence[str], files: dict[str, Path | None]) -> None:
    """Refuse an unknown fold or gene, or a variant list or BED that does not exist, before drawing anything."""
    store.split(fold)
    store.check_genes(genes)
    for what, path in files.items():
        if path is not None:
            require_file(Path(path), what)


def write_report(store: Path | str, out: Path | str, fold: int = 0, genes: Sequence[str] = (), finemapped: Path | None = None,
                 states: Path | None = None, truth: Path | None = None) -> Path:
    """Render the report of a store into `out/index.html`; returns `out`.

    genes: genes of the per-gene figures (default: those with the most models scored in the fold, at most 4).
    finemapped, truth: TSVs of variants (contig, position, optionally gene_id, ref, alt) for the auROC figure;
    states: a chromatin-state BED for the enrichment figure.
    """
    opened = Store(store)
    check_inputs(opened, fold, genes, {"fine-mapped variant list": finemapped, "chromatin-state BED": states,
                                       "truth variant list": truth})
    inputs = ReportInputs(opened, fold, tuple(genes), finemapped, states, truth)
    sections = [render_section(k, spec, inputs) for k, spec in enumerate(FIGURES, start=1)]
    out = make_directory(Path(out))
    page = render_page(inputs, sections)
    replace_atomically(out / "index.html", lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return out
