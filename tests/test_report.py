"""`pstore report`: every figure drawn from a store with results, the compare table's numbers, offline, missing data."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import pstore
from scipy.stats import pearsonr
from simulated import simulated_store
from sklearn.metrics import r2_score

from performer_store import schemas
from performer_store.compare import compare_models
from performer_store.enet import run_enet
from performer_store.report import FIGURES, format_number
from performer_store.results import blank_result, read_result, write_result
from performer_store.store import Store

FOLD = 0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(path, gene_id: str, model: str, kind: str, run, noise: float, seed: int) -> None:
    """A synthetic result of one gene: target plus noise for the fold's tune and test people, scored here."""
    store = Store(path)
    target = store.gene(gene_id)["target"][:].astype(np.float64)
    values = blank_result({"folds": store.root["sample_split"].shape[0], "samples": len(target)})
    split = store.split(FOLD)
    test = (split == 2) & ~np.isnan(target)
    prediction = np.where(split != 0, target + noise * np.random.default_rng(seed).normal(size=len(target)), np.nan)
    values["prediction"][FOLD], values["status"][FOLD] = prediction, "ok"
    values["pearson_r"][FOLD] = pearsonr(prediction[test], target[test]).statistic
    values["r2"][FOLD] = r2_score(target[test], prediction[test])
    write_result(path, gene_id, model, kind, [FOLD], values, {"runs": {str(FOLD): str(run)}} if run else None)


def write_ism(path, gene_id: str, model: str, kind: str, scores: np.ndarray) -> None:
    """Synthetic ISM scores of one model for the fold."""
    values = blank_result({"folds": 3, "variants": len(scores)}, (schemas.ISM_RESULT,))
    values["ism_score"][FOLD], values["ism_reference"][FOLD], values["status"][FOLD] = scores, 0.0, "ok"
    write_result(path, gene_id, model, kind, [FOLD], values, {"method": {str(FOLD): "full"}}, (schemas.ISM_RESULT,), schemas.ISM_GROUP)


def write_reference(path, gene_id: str, model: str, kind: str, value: float) -> None:
    """A synthetic reference-window prediction of one model for the fold."""
    values = blank_result({"folds": 3}, (schemas.REFERENCE_RESULT,))
    values["reference_prediction"][FOLD], values["status"][FOLD] = value, "ok"
    write_result(path, gene_id, model, kind, [FOLD], values, None, (schemas.REFERENCE_RESULT,), schemas.REFERENCE_GROUP)


def write_run_dir(directory, genes: list[str], epochs: int = 6) -> None:
    """A run directory as `pstore train` leaves it: run.json (genes) and metrics.jsonl."""
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps({"genes": genes, "fold": FOLD}))
    lines = [{"epoch": e, "train_loss": 1 / (e + 1), "tune_r": 0.1 * e, "tune_r2": 0.05 * e - 0.01 * max(0, e - 4) ** 2,
              "best_epoch": min(e, 4)} for e in range(epochs)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A bare simulated store (160 people, 4 genes, 8,192 bp) and a copy with results of fold 0: enet; single-gene
    Performer runs `performer` (and `performer_frac0.5`, as on half the train people) on genes 0-1; a multi-gene run `multi` trained on genes 0-2, scored on all 4; base
    `enformer`; ISM scores of all three (near the enet coefficients, so HSVs and drivers exist); reference-window
    predictions of `enformer` (following mean expression) and `multi` (not)."""
    directory = tmp_path_factory.mktemp("report")
    cohort, bare = simulated_store(directory, 8_192)
    path = directory / "scored.zarr"
    shutil.copytree(bare, path)
    genes = list(Store(path).genes.index)
    run_enet(path, genes, folds=[FOLD], progress=False)
    rng = np.random.default_rng(3)
    write_run_dir(directory / "runs" / "multi", genes[:3])
    for k, gene_id in enumerate(genes):
        coefficients = read_result(path, gene_id, "enet")[0]["enet_coefficient"][FOLD]
        if k < 2:
            write_run_dir(directory / "runs" / f"single_{k}", [gene_id])
            write_run(path, gene_id, "performer", "performer", directory / "runs" / f"single_{k}", 0.6, k)
            write_run_dir(directory / "runs" / f"half_{k}", [gene_id])  # a learning-curve run on half the people
            write_run(path, gene_id, "performer_frac0.5", "performer", directory / "runs" / f"half_{k}", 1.2, 30 + k)
            write_ism(path, gene_id, "performer", "performer", coefficients + 0.01 * rng.normal(size=len(coefficients)))
        write_run(path, gene_id, "multi", "performer", directory / "runs" / "multi", 0.9 + k, 10 + k)
        write_run(path, gene_id, "enformer", "enformer", None, 3.0, 20 + k)
        write_ism(path, gene_id, "multi", "performer", coefficients + 0.05 * rng.normal(size=len(coefficients)))
        write_ism(path, gene_id, "enformer", "enformer", rng.normal(size=len(coefficients)))
        mean = Store(path).gene(gene_id).attrs["mean_expression"]
        write_reference(path, gene_id, "enformer", "enformer", mean + 0.3 * rng.normal())
        write_reference(path, gene_id, "multi", "performer", rng.normal())
    return cohort, bare, path


class Page(HTMLParser):
    """The parts of a report page the tests read: figures (image data, caption, missing note), tables, links."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._figure = self._table = self._cell = self._text = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "figure":
            self._figure = self.figures.setdefault(attrs["id"], {"images": [], "caption": "", "missing": ""})
        elif tag == "img" and self._figure is not None:
            self._figure["images"].append(attrs["src"])
        elif tag in ("figcaption", "p") and self._figure is not None:
            self._text = "caption" if tag == "figcaption" else "missing"
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag in ("figcaption", "p"):
            self._text = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._figure is not None and self._text:
            self._figure[self._text] += data


@pytest.fixture(scope="module")
def page(stores, tmp_path_factory) -> Page:
    """The report of the scored store, with the cohort's fine-mapped eQTLs, chromatin states and truth table."""
    cohort, _, path = stores
    out = tmp_path_factory.mktemp("page") / "report"
    result = pstore("report", "--store", str(path), "--out", str(out), "--finemapped", str(cohort.finemapped_eqtls),
                    "--states", str(cohort.chromatin_states), "--truth", str(cohort.truth_variants))
    assert f"wrote {out / 'index.html'}" in result.output
    return Page((out / "index.html").read_text())


def test_every_figure_is_an_embedded_png_with_a_caption(page):
    """Figures 1-13 each have an id, one non-empty base64 PNG and a caption; none is reported missing."""
    assert [f"fig-{spec.id}" for spec in FIGURES] == list(page.figures)
    for identifier, figure in page.figures.items():
        assert not figure["missing"], f"{identifier}: {figure['missing']}"
        (source,) = figure["images"]
        assert source.startswith("data:image/png;base64,"), identifier
        data = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, identifier
        assert len(figure["caption"].strip()) > 40, identifier


def test_table_equals_compare_models(page, stores):
    """The per-gene table shows compare_models' table (all its columns, every number as `pstore compare` prints it)."""
    table = compare_models(stores[2]).table
    header, *rows = page.tables["compare-table"]
    assert header == list(table.columns)
    assert rows == [[format_number(v) for v in row] for row in table.itertuples(index=False)]
    printed = pstore("compare", "--store", str(stores[2])).output
    for row in table.itertuples(index=False):
        assert f"{row.multi_minus_enet_r2:.4f}" in printed and f"{row.enet_r2:.4f}" in printed
    numbers = np.array([[float(cell) for cell in row[3:]] for row in rows])
    np.testing.assert_allclose(numbers, table.iloc[:, 3:].to_numpy(float), atol=5e-5)


def test_page_is_offline(page):
    """Nothing is fetched from the network: every src/href is inline data or an anchor in the page."""
    assert page.links and all(link.startswith(("data:", "#")) for link in page.links)


def test_missing_inputs_are_said_in_place(stores, tmp_path):
    """A store without results still renders: every figure names what is missing and the command that adds it."""
    _, bare, _ = stores
    pstore("report", "--store", str(bare), "--out", str(tmp_path))
    found = Page((tmp_path / "index.html").read_text())
    assert all(figure["missing"] and not figure["images"] for figure in found.figures.values())
    notes = {identifier: figure["missing"] for identifier, figure in found.figures.items()}
    assert "pstore enet" in notes["fig-metrics"] and "pstore ism" in notes["fig-weights"]
    assert "--finemapped" in notes["fig-auroc"] and "pstore train" in notes["fig-training"]
    assert "train_fractions" in notes["fig-learning"]
    assert "pstore evaluate --reference" in notes["fig-mean"]  # the bare store has mean expression but no predictions
    assert re.search(r"no model results in this store", (tmp_path / "index.html").read_text())


def test_bad_arguments_are_one_line_errors(stores, tmp_path):
    """An unknown gene or a missing BED stops the report before anything is drawn."""
    _, _, path = stores
    assert "no gene NOPE" in pstore("report", "--store", str(path), "--out", str(tmp_path), "--gene", "NOPE", expect=1).output
    output = pstore("report", "--store", str(path), "--out", str(tmp_path), "--states", str(tmp_path / "no.bed"), expect=1).output
    assert "no.bed" in output and not (tmp_path / "index.html").exists()


def test_a_killed_report_keeps_the_previous_page(stores, tmp_path, monkeypatch):
    """index.html is written beside itself and renamed: dying half-way through the write keeps the old page."""
    from pathlib import Path

    _, bare, _ = stores
    (tmp_path / "index.html").write_text("previous page")
    real = Path.write_text

    def dies(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", dies)
    with pytest.raises(KeyboardInterrupt):
        from performer_store.report import write_report

        write_report(bare, tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "index.html").read_text() == "previous page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
