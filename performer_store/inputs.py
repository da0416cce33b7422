"""Readers of the build's inputs: FASTA, VCF/BCF, GENCODE GTF and GTEx-style expression BED.

This module owns coordinates (0-based half-open everywhere except VCF POS) and contig names (`chr1` vs `1`).
Every problem with an input raises `InputError` with one line naming the file, the record and the fix.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
VCF_INDEX_FLAGS = {".csi": "-c", ".tbi": "-t"}  # index suffix -> `bcftools index` flag; htslib uses .csi first
MISSING_EXPRESSION = {"", "na", "nan", "n/a", "."}


class InputError(ValueError):
    """A problem with the user's input, worded as one line that names the file, the record and the fix."""


@dataclass(frozen=True)
class Gene:
    """A gene from the GTF, with its TSS 0-based on the forward strand."""

    gene_id: str
    gene_name: str
    gene_type: str
    contig: str
    strand: str
    tss: int

    def window(self, width: int) -> tuple[int, int]:
        """The 0-based half-open window of `width` bp with the TSS at index width // 2."""
        start = self.tss - width // 2
        return start, start + width


def strip_version(gene_id: str) -> str:
    """ENSG00000123456.7 -> ENSG00000123456 (GENCODE version suffixes differ between releases); a PAR gene's
    chrY copy ENSG..._PAR_Y shares its chrX copy's key, which the build relies on to pick the chrX copy."""
    return gene_id.split(".", 1)[0]


VERSION = re.compile(r"\.\d+(?=(_PAR_Y)?$)")


def unversioned(gene_id: str) -> str:
    """A gene ID without its version suffix: ENSG00000120758.11 -> ENSG00000120758 (ENSG..._PAR_Y keeps _PAR_Y, so
    a PAR gene's two copies stay apart)."""
    return VERSION.sub("", gene_id, count=1)


def contig_alias(name: str, available: Iterable[str]) -> str | None:
    """The name under which `available` holds contig `name`: itself, with/without `chr`, or M<->MT."""
    names = set(available)
    bare = name[3:] if name.startswith("chr") else name
    for candidate in (name, bare, "chr" + bare, *(("MT", "chrM") if bare in ("M", "MT") else ())):
        if candidate in names:
            return candidate
    return None


def is_gzip(path: Path) -> bool:
    """True for gzip or bgzip files (by their magic bytes)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def open_text(path: Path):
    """Open a plain or gzip/bgzip text file for reading."""
    return gzip.open(path, "rt") if is_gzip(path) else open(path, "rt")


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn a corrupt, truncated or non-text file met while reading `path` into one InputError naming it."""
    try:
        yield
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise InputError(f"{what} {path}: {_unreadable(error)}") from None


def _unreadable(error: Exception) -> str:
    """What a read error says about the file, and the fix."""
    if isinstance(error, EOFError):
        return "truncated or not gzip (the gzip stream ends early); copy or download it again"
    if isinstance(error, (zlib.error, gzip.BadGzipFile)):
        return f"corrupt gzip data ({error}); copy or download it again"
    if isinstance(error, UnicodeDecodeError):
        return f"not a text file (byte {error.start}: {error.reason}); give a plain or gzipped text file"
    return f"cannot be read ({error}); check the file"


def require_file(path: Path, what: str) -> Path:
    """Check an input file exists, is not a directory and is readable (and has a name the file system can hold)."""
    problem = name_too_long(path)
    if problem:
        raise InputError(f"{what} {path}: {problem}")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory; give the {what} file itself")
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file; check the path")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path}: not readable; check its permissions")
    return path


def _system_limit(path: Path, name: str, default: int) -> int:
    """A pathconf limit (PC_NAME_MAX, PC_PATH_MAX) of the file system `path` would be on: its nearest existing folder's."""
    folder = next((p for p in path.parents if os.path.isdir(p)), Path("."))
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def name_too_long(path: Path) -> str | None:
    """Why the file system cannot name `path` (a file or folder name over NAME_MAX bytes, or the whole path over
    PATH_MAX), or None: every use of such a path, even `exists()`, is an OSError (ENAMETOOLONG)."""
    name_max = _system_limit(path, "PC_NAME_MAX", 255)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            shown = part if len(part) <= 24 else part[:21] + "..."
            return (f"{shown!r} is {size} bytes, longer than the {name_max} bytes a file or folder name can have; "
                    "choose a shorter name")
    size, path_max = len(os.fsencode(path)), _system_limit(path, "PC_PATH_MAX", 4096)
    if size >= path_max:
        return f"the path is {size} bytes, longer than the {path_max - 1} bytes a path can have; choose a shorter path"
    return None


def _unwritable(folder: Path, error: OSError) -> str:
    """Why an output folder cannot be made or written in: a file standing where a folder must be, or the system's reason."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    return error.strerror or str(error)


def make_directory(directory: Path) -> Path:
    """Create an output folder and its parents (fine when it exists), or one InputError naming it and why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{directory}: cannot create the folder ({_unwritable(directory, error)}); choose another path") from None
    return directory


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError met while writing the output `path` into one InputError naming it."""
    try:
        yield
    except OSError as error:
        raise InputError(f"{path}: cannot write it ({_unwritable(path.parent, error)}); choose another path") from None


# --- GTF -----------------------------------------------------------------------------------------------

_ATTRIBUTE = {key: re.compile(rf'{key} "([^"]*)"') for key in ("gene_id", "gene_name", "gene_type")}


def read_gtf_genes(path: Path) -> pd.DataFrame:
    """Gene records of a GENCODE-style GTF: gene_id, gene_name, gene_type, contig, strand, tss (0-based)."""
    require_file(path, "GTF")
    rows = []
    with reading(path, "GTF"), open_text(path) as handle:
        for line_number, line in enumerate(handle, 1):
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 9:
                raise InputError(f"GTF {path} line {line_number}: expected 9 tab-separated fields, found {len(fields)}")
            if fields[2] != "gene":
                continue
            rows.append(_gtf_gene(path, line_number, fields))
    if not rows:
        raise InputError(f"GTF {path}: no 'gene' records; give a GENCODE-style GTF with gene lines")
    genes = pd.DataFrame(rows, columns=["gene_id", "gene_name", "gene_type", "contig", "strand", "tss"])
    duplicated = genes["gene_id"][genes["gene_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"GTF {path}: gene_id {duplicated.iloc[0]} occurs twice; give each gene once")
    return genes.set_index("gene_id", drop=False)


def _gtf_gene(path: Path, line_number: int, fields: list[str]) -> tuple:
    """One gene row from the fields of a GTF gene line."""
    values = {}
    for key, pattern in _ATTRIBUTE.items():
        match = pattern.search(fields[8])
        values[key] = match.group(1) if match else ""
    if not values["gene_id"]:
        raise InputError(f"GTF {path} line {line_number}: gene record without gene_id")
    strand = fields[6]
    if strand not in "+-" or len(strand) != 1:
        raise InputError(f"GTF {path} line {line_number}: strand {strand!r} is not '+' or '-'")
    try:
        start, end = int(fields[3]), int(fields[4])
    except ValueError:
        raise InputError(f"GTF {path} line {line_number}: start/end {fields[3]!r}/{fields[4]!r} are not integers") from None
    tss = start - 1 if strand == "+" else end - 1
    return values["gene_id"], values["gene_name"] or values["gene_id"], values["gene_type"], fields[0], strand, tss


def select_genes(gtf: pd.DataFrame, requested: Sequence[str], gtf_path: Path) -> list[Gene]:
    """Genes by ID (exact, else ignoring the version suffix) or by unique gene name, in request order."""
    by_bare = {strip_version(g): g for g in sorted(gtf.index, key=lambda g: not g.endswith("_PAR_Y"))}  # chrX copy wins
    by_name = gtf.groupby("gene_name")["gene_id"].agg(list).to_dict()
    genes, seen = [], set()
    for query in requested:
        gene_id = query if query in gtf.index else by_bare.get(strip_version(query))
        if gene_id is None and len(by_name.get(query, [])) == 1:
            gene_id = by_name[query][0]
        if gene_id is None:
            raise InputError(f"gene {query} is not in GTF {gtf_path}; check the ID or use the GTF the expression was quantified with")
        if gene_id not in seen:
            seen.add(gene_id)
            row = gtf.loc[gene_id]
            genes.append(Gene(gene_id, row.gene_name, row.gene_type, row.contig, row.strand, int(row.tss)))
    return genes


# --- FASTA ---------------------------------------------------------------------------------------------


class Reference:
    """A FASTA read through pyfaidx; windows beyond a contig edge are padded with N."""

    def __init__(self, path: Path):
        import pyfaidx

        self.path = require_file(path, "FASTA")
        try:
            with warnings.catch_warnings():  # "index older than FASTA": _check_index decides from its contents
                warnings.simplefilter("ignore", RuntimeWarning)
                self._fasta = pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=True, rebuild=False)
        except Exception as error:  # pyfaidx raises several types for unreadable or unindexable files
            raise InputError(f"FASTA {path}: cannot be read or indexed ({error}); give an uncompressed or bgzipped FASTA with a writable directory or a .fai index") from None
        self._check_index()

    def _check_index(self) -> None:
        """The .fai must describe this file: its last contig ends where the file does (a FASTA re-wrapped,
        truncated or replaced after indexing would otherwise give shifted or short windows)."""
        if is_gzip(self.path):
            return  # bgzipped: the .fai counts uncompressed bytes, the .gzi checks itself
        last = next(reversed(self._fasta.faidx.index.values()), None)
        size = self.path.stat().st_size
        if last is not None and not last.bend <= size < last.bend + last.lenb:
            raise InputError(f"FASTA {self.path}: its index {self.path}.fai does not match the file (made for another or an older version of it); delete the .fai and run again")

    @cached_property
    def lengths(self) -> dict[str, int]:
        """Contig name -> length."""
        return {name: len(record) for name, record in self._fasta.records.items()}

    def contig(self, name: str, what: str) -> str:
        """This FASTA's name for a contig named `name` by another input, or a clear error."""
        found = contig_alias(name, self.lengths)
        if found is None:
            shown = ", ".join(list(self.lengths)[:8])
            raise InputError(f"FASTA {self.path}: has no contig {name!r} ({what}); it has {shown}; use a FASTA of the same genome build")
        return found

    def fetch(self, contig: str, start: int, stop: int) -> bytes:
        """Bases [start, stop) of a contig (0-based), uppercase, with N beyond either edge."""
        length = self.lengths[contig]
        inner = self._fasta[contig][max(start, 0) : min(stop, length)] if start < length and stop > 0 else ""
        expected = max(0, min(stop, length) - max(start, 0))
        if len(inner) != expected:
            raise InputError(f"FASTA {self.path}: {contig}:{start + 1}-{stop} reads {len(inner)} bases, not {expected}; the file is truncated or its .fai is stale: delete the .fai and run again")
        left, right = max(0, -start), max(0, stop - max(length, start))
        return b"N" * left + inner.encode() + b"N" * right


# --- expression BED ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A GTEx-style normalized expression BED: genes x samples cells as text, parsed per gene on demand."""

    path: Path
    samples: tuple[str, ...]
    gene_rows: Mapping[str, int]  # gene_id -> 0-based row of `cells`
    cells: np.ndarray  # (genes, samples) str

    def gene_row(self, gene_id: str) -> str | None:
        """This BED's ID for a GTF gene ID (exact, else ignoring version suffixes)."""
        if gene_id in self.gene_rows:
            return gene_id
        bare = strip_version(gene_id)
        matches = [g for g in self.gene_rows if strip_version(g) == bare]
        return matches[0] if len(matches) == 1 else None

    def targets(self, gene_id: str, samples: Sequence[str]) -> np.ndarray:
        """float32 values of one gene for the given expression sample columns; non-numeric cells raise."""
        row_id = self.gene_row(gene_id)
        if row_id is None:
            raise InputError(f"expression BED {self.path}: no row for gene {gene_id}; drop the gene or give a BED that has it")
        column = {s: i for i, s in enumerate(self.samples)}
        raw = self.cells[self.gene_rows[row_id], [column[s] for s in samples]]
        numbers = pd.to_numeric(raw, errors="coerce").astype(np.float32)
        for i in np.flatnonzero(~np.isfinite(numbers)):
            if not np.isnan(numbers[i]) or raw[i].strip().lower() not in MISSING_EXPRESSION:
                raise InputError(
                    f"expression BED {self.path} line {self.gene_rows[row_id] + 2}: value {raw[i]!r} of sample "
                    f"{samples[i]} (gene {row_id}) is not a finite number; fix the value or write NA"
                )
        return numbers


def read_expression(path: Path) -> Expression:
    """Read a `#chr start end gene_id sample...` BED (plain or bgzipped) as text, checked later per gene."""
    require_file(path, "expression BED")
    with reading(path, "expression BED"), open_text(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if len(header) < 5 or header[3] != "gene_id" or not header[0].startswith("#"):
            raise InputError(f"expression BED {path} line 1: header must be '#chr start end gene_id' then one column per sample")
        try:
            values = pd.read_csv(handle, sep="\t", header=None, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise InputError(f"expression BED {path}: no gene rows after the header; give one row per gene") from None
        except pd.errors.ParserError as error:
            raise InputError(f"expression BED {path}: cannot be read ({error}); give a tab-separated, plain or bgzipped BED") from None
    samples = header[4:]
    duplicate = pd.Index(samples)[pd.Index(samples).duplicated()]
    if len(duplicate):
        raise InputError(f"expression BED {path} line 1: sample {duplicate[0]} appears twice; give each sample one column")
    if values.shape[1] != len(header):
        raise InputError(f"expression BED {path}: rows have {values.shape[1]} columns but the header has {len(header)}")
    values.columns = header
    gene_ids = values["gene_id"]
    duplicated = gene_ids[gene_ids.duplicated()]
    if len(duplicated):
        raise InputError(f"expression BED {path} line {duplicated.index[0] + 2}: gene {duplicated.iloc[0]} has a second row")
    rows = {gene: i for i, gene in enumerate(gene_ids)}
    return Expression(path, tuple(samples), rows, values[samples].to_numpy(dtype=object))


def read_mean_expression(path: Path) -> dict[str, float]:
    """A TSV with a header naming gene_id and mean_expression (other columns ignored): each gene's mean expression on a
    raw scale (e.g. mean log TPM across people), keyed by gene ID without its version suffix; NA cells are left out."""
    require_file(path, "mean-expression table")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"mean-expression table {path}: cannot be read ({error}); give a tab-separated file") from None
    missing = sorted({"gene_id", "mean_expression"} - set(table.columns))
    if missing:
        raise InputError(f"mean-expression table {path} line 1: no column {', '.join(missing)}; the header must name "
                         "gene_id and mean_expression (tab-separated)")
    bare = table["gene_id"].map(strip_version)
    if bare.duplicated().any():
        line = int(np.flatnonzero(bare.duplicated())[0]) + 2
        raise InputError(f"mean-expression table {path} line {line}: gene {table['gene_id'].iloc[line - 2]} has a second row")
    values = pd.to_numeric(table["mean_expression"], errors="coerce")
    given = ~table["mean_expression"].str.strip().str.lower().isin(MISSING_EXPRESSION)
    bad = np.flatnonzero(given & ~np.isfinite(values))
    if len(bad):
        raise InputError(f"mean-expression table {path} line {bad[0] + 2}: value {table['mean_expression'].iloc[bad[0]]!r} "
                         "is not a finite number; fix it or write NA")
    return {gene: float(value) for gene, value in zip(bare, values) if np.isfinite(value)}


def gtex_participant(sample_id: str) -> str:
    """GTEx sample ID GTEX-XXXXX-0005-SM-ABCDE -> participant GTEX-XXXXX (others unchanged)."""
    parts = sample_id.split("-")
    return "-".join(parts[:2]) if sample_id.startswith("GTEX-") and len(parts) > 2 else sample_id


def read_sample_map(path: Path) -> dict[str, str]:
    """Two-column TSV: expression sample ID, VCF sample ID (a header line is allowed)."""
    require_file(path, "sample map")
    mapping = {}
    with reading(path, "sample map"), open_text(path) as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.rstrip("\n").split("\t")
            if line_number == 1 and fields[0].lower() in {"expression", "expression_sample", "sample"}:
                continue
            if len(fields) != 2:
                raise InputError(f"sample map {path} line {line_number}: expected 2 tab-separated columns (expression sample, VCF sample)")
            mapping[fields[0]] = fields[1]
    return mapping


def match_samples(
    expression: Expression, vcf_samples: Sequence[str], vcf_path: Path, mapping: Mapping[str, str] | None = None
) -> dict[str, str]:
    """VCF sample -> expression column, via the mapping, exact IDs, or GTEx sample-to-participant IDs."""
    in_vcf = set(vcf_samples)
    matched: dict[str, str] = {}
    for column in expression.samples:
        person = mapping.get(column) if mapping is not None else column if column in in_vcf else gtex_participant(column)
        if person not in in_vcf:
            continue
        if person in matched:
            raise InputError(
                f"expression BED {expression.path}: columns {matched[person]} and {column} both map to VCF sample "
                f"{person}; keep one column per person or give --sample-map"
            )
        matched[person] = column
    if not matched:
        raise InputError(
            f"no sample of expression BED {expression.path} (e.g. {expression.samples[0]}) is in VCF {vcf_path} "
            f"(e.g. {vcf_samples[0] if vcf_samples else 'none'}); give --sample-map EXPRESSION_ID<TAB>VCF_ID"
        )
    return matched


# --- VCF / BCF -----------------------------------------------------------------------------------------

_STDERR = threading.Lock()  # one capture of fd 2 at a time (threaded Dask workers share a process and its VCF handle)


@contextmanager
def htslib_errors() -> Iterator[list[str]]:
    """The error lines htslib writes to stderr (fd 2) meanwhile; anything else it writes passes on to stderr."""
    errors: list[str] = []
    with _STDERR, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield errors
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            errors.extend(line for line in lines if line.startswith("[E::"))
            other = [line for line in lines if not line.startswith("[E::")]
            if other:
                print("\n".join(other), file=sys.stderr)


def check_vcf_file(path: Path) -> None:
    """A VCF/BCF must be bgzipped, end with the BGZF EOF block and have up-to-date .csi/.tbi indexes."""
    require_file(path, "VCF")
    _check_bgzf(path)
    indexes = [Path(str(path) + suffix) for suffix in VCF_INDEX_FLAGS if Path(str(path) + suffix).is_file()]
    if not indexes:
        raise InputError(f"VCF {path}: {_no_index(path)}")
    for index in indexes:  # all of them: htslib reads the .csi when both are present
        if index.stat().st_mtime < path.stat().st_mtime - 1:
            raise InputError(f"VCF {path}: index {index} is older than the file; re-index with "
                             f"`bcftools index -f {VCF_INDEX_FLAGS[index.suffix]} {path}` or delete the index")
        _check_index_matches(path, index)


def _check_index_matches(path: Path, index: Path) -> None:
    """An index must point at this file's records: each contig's first record lies where the index says (an index
    of another file, newer than this one, is otherwise read as htslib noise or as a contig without records)."""
    fix = f"re-index with `bcftools index -f {VCF_INDEX_FLAGS[index.suffix]} {path}`"
    try:
        firsts = _index_first_records(index)
    except (OSError, EOFError, zlib.error, struct.error, ValueError):
        raise InputError(f"VCF {path}: index {index} cannot be read (damaged, or not a {index.suffix} index); {fix}") from None
    with open(path, "rb") as handle:
        if not all(_record_at(handle, offset, name) for name, offset in firsts):
            raise InputError(f"VCF {path}: index {index} does not match the file (it was made for another file or "
                             f"another version of it); {fix}")


def _index_first_records(index: Path) -> list[tuple[bytes | None, int]]:
    """(contig name, virtual offset of its first record) of each contig a .tbi/.csi holds records for."""
    data = gzip.decompress(index.read_bytes())
    names, at = _index_names(data)
    tbi = data[:4] == b"TBI\x01"
    bin_size = 8 if tbi else 16  # a bin's bin and n_chunk (.csi: bin, loffset, n_chunk) before its chunks
    firsts = []
    for name in names:
        (n_bin,), at, first = struct.unpack_from("<i", data, at), at + 4, None
        for _ in range(n_bin):  # chunks are (begin, end) virtual offsets, sorted within a bin
            (n_chunk,) = struct.unpack_from("<i", data, at + bin_size - 4)
            if n_chunk:
                begin = struct.unpack_from("<Q", data, at + bin_size)[0]
                first = begin if first is None else min(first, begin)
            at += bin_size + 16 * n_chunk
        if tbi:  # the linear index: n_intv offsets
            at += 4 + 8 * struct.unpack_from("<i", data, at)[0]
        if first is not None:
            firsts.append((name, first))
    return firsts


def _index_names(data: bytes) -> tuple[list[bytes | None], int]:
    """A decompressed .tbi/.csi's contig names (None each in a BCF's .csi: the BCF header names them) and where
    its per-contig bins start."""
    if data[:4] == b"TBI\x01":  # magic, n_ref, 6 ints of tabix conf, l_nm, names
        (n_ref,), (l_nm,) = struct.unpack_from("<i", data, 4), struct.unpack_from("<i", data, 32)
        return data[36 : 36 + l_nm].split(b"\0")[:n_ref], 36 + l_nm
    if data[:4] == b"CSI\x01":  # magic, min_shift, depth, l_aux, aux (a VCF's: 6 ints of tabix conf, l_nm, names), n_ref
        (l_aux,) = struct.unpack_from("<i", data, 12)
        (n_ref,) = struct.unpack_from("<i", data, 16 + l_aux)
        return (data[16 + 28 : 16 + l_aux].split(b"\0")[:n_ref] if l_aux else [None] * n_ref), 20 + l_aux
    raise ValueError("no TBI or CSI magic")


def _record_at(handle, offset: int, name: bytes | None) -> bool:
    """Whether a virtual offset points into a BGZF block of the file, at a line of contig `name` when given."""
    handle.seek(offset >> 16)
    header = handle.read(18)
    if header[:2] != b"\x1f\x8b" or not _is_bgzf(header):
        return False
    block = handle.read(struct.unpack_from("<H", header, 16)[0] + 1 - 18)
    try:
        data = zlib.decompress(block[:-8], -15)
    except zlib.error:
        return True  # a damaged block is the file's problem, said when its region is read
    within = offset & 0xFFFF
    return within <= len(data) and (name is None or (name + b"\t").startswith(data[within : within + len(name) + 1]))


def _check_bgzf(path: Path) -> None:
    """Raise for an empty, uncompressed, plain-gzip or truncated VCF/BCF."""
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"VCF {path}: is empty (0 bytes); copy or download it again")
    with open(path, "rb") as handle:
        head = handle.read(14)
        handle.seek(max(0, size - len(BGZF_EOF)))
        tail = handle.read()
    if head[:2] != b"\x1f\x8b":
        fixed = _rewritten_name(path, "sorted")
        raise InputError(f"VCF {path}: not bgzip-compressed; sort, compress and index it: `bcftools sort -Oz -o {fixed} {path} && bcftools index -t {fixed}`")
    if not _is_bgzf(head):
        fixed = _rewritten_name(path, "bgzip")
        raise InputError(f"VCF {path}: compressed with gzip, not bgzip: recompress with `bgzip` and index it: `gunzip -c {path} | bgzip > {fixed} && bcftools index -t {fixed}`")
    if tail != BGZF_EOF:
        raise InputError(f"VCF {path}: truncated (no BGZF end-of-file block); copy or download it again")


def _is_bgzf(head: bytes) -> bool:
    """Whether a gzip member header is BGZF's: FLG.FEXTRA set and the first extra subfield is 'BC'."""
    return len(head) >= 14 and head[3] & 4 == 4 and head[12:14] == b"BC"


def _rewritten_name(path: Path, tag: str) -> Path:
    """A sibling name for a rewritten, bgzipped copy: calls.vcf.gz -> calls.{tag}.vcf.gz (never the input's name)."""
    name = path.name
    for suffix in (".gz", ".bgz", ".vcf", ".bcf"):
        name = name.removesuffix(suffix)
    return path.with_name(f"{name}.{tag}.vcf.gz")


def _no_index(path: Path) -> str:
    """Why a VCF/BCF without an index cannot be read, and how to index it."""
    if _is_bcf(path):
        return f"no index ({path}.csi); a BCF needs one: `bcftools index {path}`"
    unsorted = _first_unsorted_record(path)
    problem = f"not sorted ({unsorted})" if unsorted else f"no index ({path}.tbi or .csi)"
    fixed = _rewritten_name(path, "sorted")
    return f"{problem}; sort and index it: `bcftools sort -Oz -o {fixed} {path} && bcftools index -t {fixed}`"


def _is_bcf(path: Path) -> bool:
    """Whether a BGZF file holds BCF (binary) rather than VCF text."""
    with reading(path, "VCF"), gzip.open(path, "rb") as handle:
        return handle.read(3) == b"BCF"


def _first_unsorted_record(path: Path, limit: int = 100_000) -> str | None:
    """The first record (of the first `limit`) that comes before its predecessor, for a clear error."""
    seen_contigs: set[str] = set()
    previous = ("", 0)
    with reading(path, "VCF"), gzip.open(path, "rt") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.startswith("#"):
                continue
            if line_number > limit:
                return None
            contig, pos = line.split("\t", 2)[:2]
            if contig != previous[0]:
                if contig in seen_contigs:
                    return f"line {line_number}: contig {contig} appears again after {previous[0]}"
                seen_contigs.add(contig)
            elif int(pos) < previous[1]:
                return f"line {line_number}: {contig}:{pos} comes after {contig}:{previous[1]}"
            previous = (contig, int(pos))
    return None


def vcf_header_samples(path: Path) -> list[str] | None:
    """Sample names from a text VCF's #CHROM line (None for BCF), read without htslib to name duplicates."""
    with reading(path, "VCF"), gzip.open(path, "rt", errors="replace") as handle:
        for line in handle:
            if line.startswith("#CHROM"):
                return line.rstrip("\n").split("\t")[9:]
            if not line.startswith("##"):
                return None
    return None


def _declares_gt(vcf) -> bool:
    """Whether a cyvcf2 VCF's header has a FORMAT/GT line (without one, reading a record's genotypes fails)."""
    return any(h.type == "FORMAT" and h.info().get("ID") == "GT" for h in vcf.header_iter())


@dataclass(frozen=True)
class WindowVariants:
    """The SNV rows of one window (multi-allelic sites split per ALT) and what was left out."""

    position: np.ndarray  # (variants,) int32, 1-based
    allele: np.ndarray  # (variants, 2) str, REF and ALT
    variant_id: np.ndarray  # (variants,) str
    call_genotype: np.ndarray  # (variants, samples, 2) int8: 1 this ALT, 0 other, -1 missing, -2 no 2nd call
    counts: Mapping[str, int]


SNV_BASES = frozenset("ACGT")
REF_MARGIN = 1024  # bases read past the window so that most indel REFs are checked without another FASTA read


class VariantSource:
    """A bgzipped, indexed VCF/BCF read with cyvcf2, restricted to chosen samples in a chosen order."""

    def __init__(self, path: Path, samples: Sequence[str] | None = None):
        from cyvcf2 import VCF

        check_vcf_file(path)
        self.path = path
        if path.suffix != ".bcf":
            header = pd.Index(vcf_header_samples(path) or [])
            if header.duplicated().any():
                raise InputError(f"VCF {path}: sample {header[header.duplicated()][0]} appears twice in the header; rename or drop one (`bcftools reheader`)")
        try:
            self._vcf = VCF(str(path), samples=list(samples) if samples is not None else None, lazy=True)
        except Exception as error:  # cyvcf2 raises bare Exception for any header problem
            raise InputError(f"VCF {path}: cannot read the header ({error}); the file is corrupt: check it with `bcftools view -h {path}`") from None
        if not _declares_gt(self._vcf):
            raise InputError(f"VCF {path}: its header declares no FORMAT/GT (##FORMAT=<ID=GT,...>); the build needs hard "
                             "genotype calls (GT), which a sites-only or dosage-only (DS) VCF lacks: give a VCF with GT calls")
        self.samples = list(self._vcf.samples)
        self._damaged = ""  # the first read error: every later read raises it again
        order = samples if samples is not None else self.samples
        position = {s: i for i, s in enumerate(self.samples)}
        self._order = np.array([position[s] for s in order], dtype=np.int64)

    @cached_property
    def contigs(self) -> list[str]:
        """Contig names the VCF knows (header ##contig lines and the index)."""
        return list(dict.fromkeys([*self._vcf.seqnames]))

    @cache
    def has_records(self, contig: str) -> bool:
        """Whether the index holds any record on this contig (a per-chromosome VCF may list every contig in its header)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # cyvcf2: "no intervals found" for a contig not indexed
            return next(iter(self._vcf(contig)), None) is not None

    def contig(self, name: str, what: str, reference: Reference) -> str:
        """This VCF's name for a contig named `name` elsewhere. A contig it does not know keeps `name` and has no
        records (a per-chromosome VCF whose header lists its own contig only), unless none of the VCF's contigs is a
        FASTA contig: then the two name contigs differently, a clear error."""
        found = contig_alias(name, self.contigs)
        if found is None and not self._shares_contigs(reference):
            shown = ", ".join(self.contigs[:8]) or "none"
            raise InputError(
                f"VCF {self.path}: has no contig {name!r} ({what}); it has {shown}; rename contigs with "
                f"`bcftools annotate --rename-chrs` or use a VCF of the same genome build"
            )
        return found or name

    @cache
    def _shares_contigs(self, reference: Reference) -> bool:
        """Whether any contig of this VCF is a contig of the FASTA (by name, `chr1`/`1` and `chrM`/`MT` reconciled)."""
        return any(contig_alias(contig, reference.lengths) is not None for contig in self.contigs)

    def window(self, contig: str, start: int, stop: int, reference: Reference, ref_contig: str,
               skip_ref_mismatch: bool) -> WindowVariants:
        """SNV rows with POS in [start, stop) (0-based), REF checked against the FASTA (`ref_contig`)."""
        counts = dict.fromkeys(("records", "snv_alleles", "indel_alleles", "mnp_alleles", "non_acgt_alleles", "symbolic_alleles",
                                "multiallelic_sites", "ref_mismatch_skipped", "records_without_gt", "missing_calls"), 0)
        sequence = reference.fetch(ref_contig, start, stop + REF_MARGIN).decode()
        kept: list[tuple[int, str, list[str], str, np.ndarray]] = []
        last = (-1, "")
        for record in self._records(contig, max(start, 0), stop):
            if record.POS - 1 < start or record.POS - 1 >= stop:
                continue  # a deletion starting before the window overlaps it; SNVs only count inside
            where = f"{record.CHROM}:{record.POS} {record.REF}>{','.join(record.ALT)}"
            if record.POS < last[0]:
                raise InputError(f"VCF {self.path}: record {where} comes after {last[1]}; the file is not sorted: `bcftools sort`, then re-index")
            last = (record.POS, where)
            counts["records"] += 1
            ref = record.REF.upper()
            offset = record.POS - 1 - start
            fasta = sequence[offset : offset + len(ref)] if len(ref) <= REF_MARGIN else reference.fetch(ref_contig, record.POS - 1, record.POS - 1 + len(ref)).decode()
            if not self._ref_matches(ref, fasta, where, reference, skip_ref_mismatch):
                counts["ref_mismatch_skipped"] += 1
                continue
            calls = self._calls(record)
            if calls is None:
                counts["records_without_gt"] += 1  # uncalled for everyone: the reference, as a missing genotype is
                continue
            kept.append((record.POS, ref, [a.upper() for a in record.ALT], record.ID or ".", calls))
        return self._split(kept, counts)

    def _calls(self, record) -> np.ndarray | None:
        """A record's GT allele indices for the chosen people, (people, 2): -1 missing, -2 no second call; None for a
        record whose FORMAT lacks GT (optional per record in the VCF spec, e.g. a DS-only record)."""
        try:
            genotype = record.genotype
        except Exception:  # cyvcf2 raises bare Exception; the attempt unpacked FORMAT (read lazily, it would crash)
            if "GT" in record.FORMAT:
                raise
            return None
        gt = genotype.array()[self._order, :-1]
        self._check_allele_indices(record, gt)
        if gt.shape[1] > 2:
            raise InputError(f"VCF {self.path}: record {record.CHROM}:{record.POS} has ploidy {gt.shape[1]}; only diploid/haploid calls are supported")
        if gt.shape[1] == 1:
            gt = np.pad(gt, ((0, 0), (0, 1)), constant_values=-2)  # haploid: no second call, as bcftools consensus
        return gt

    def _check_allele_indices(self, record, gt: np.ndarray) -> None:
        """A GT allele index beyond the record's ALTs (0/3 at a bi-allelic site) is a malformed VCF, not a reference call."""
        bad = np.flatnonzero((gt > len(record.ALT)).any(axis=1))
        if len(bad):
            call = "/".join("." if a == -1 else str(a) for a in gt[bad[0]] if a != -2)
            where, fixed = f"{record.CHROM}:{record.POS}", _rewritten_name(self.path, "fixed")
            raise InputError(
                f"VCF {self.path}: record {where} gives sample {self.samples[self._order[bad[0]]]} GT {call}, but it has "
                f"{len(record.ALT)} ALT allele(s); the file is malformed: fix the record or drop it "
                f"(`bcftools view -t ^{where} -Oz -o {fixed} {self.path} && bcftools index -t {fixed}`)"
            )

    def _split(self, kept: list[tuple[int, str, list[str], str, np.ndarray]], counts: dict[str, int]) -> WindowVariants:
        """One row per SNV ALT (multi-allelic sites split, as bcftools norm -m-); other ALTs are counted by kind:
        symbolic, indel (REF and ALT lengths differ), MNP (same length, 2+ bases), non-ACGT (one base, e.g. N)."""
        rows = []  # (record index, allele index)
        for index, (_, ref, alts, _, _) in enumerate(kept):
            counts["multiallelic_sites"] += len(alts) > 1
            for allele, alt in enumerate(alts, 1):
                if alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt:
                    counts["symbolic_alleles"] += 1
                elif len(ref) != len(alt):
                    counts["indel_alleles"] += 1
                elif len(ref) > 1:
                    counts["mnp_alleles"] += 1
                elif ref not in SNV_BASES or alt not in SNV_BASES:
                    counts["non_acgt_alleles"] += 1
                else:
                    rows.append((index, allele))
        counts["snv_alleles"] = len(rows)
        calls = np.stack([k[4] for k in kept]) if kept else np.zeros((0, len(self._order), 2), np.int16)
        counts["missing_calls"] = int((calls[:, :, 0] == -1).sum())
        record, allele = np.array(rows, dtype=np.int64).reshape(-1, 2).T
        genotype = calls[record]
        return WindowVariants(
            position=np.array([kept[r][0] for r in record], dtype=np.int32),
            allele=np.array([[kept[r][1], kept[r][2][a - 1]] for r, a in rows], dtype=str).reshape(-1, 2),
            variant_id=np.array([kept[r][3] for r in record], dtype=str),
            call_genotype=np.where(genotype < 0, genotype, genotype == allele[:, None, None]).astype(np.int8),
            counts=counts,
        )

    def _records(self, contig: str, start: int, stop: int) -> list:
        """cyvcf2 records of a region, with htslib errors turned into InputError naming the region."""
        region = f"{contig}:{start + 1}-{stop}"
        check = f"check it with `bcftools view {self.path} {region} > /dev/null`"
        if self._damaged:  # htslib does not say it again, and the handle reads nothing more
            raise InputError(self._damaged)
        with htslib_errors() as errors:
            try:
                records = list(self._vcf(region))
            except Exception as error:  # cyvcf2 raises bare Exception on corrupt records
                raise InputError(f"VCF {self.path}: corrupt record in region {region} ({error}); {check}") from None
        if errors:  # a damaged BGZF block: cyvcf2 stops there as if the region had ended
            self._damaged = f"VCF {self.path}: cannot read region {region} ({errors[0]}); the file is damaged: {check}, then copy or download it again"
            raise InputError(self._damaged)
        return records

    def _ref_matches(self, ref: str, fasta: str, where: str, reference: Reference, skip: bool) -> bool:
        """True when REF equals the FASTA (N/IUPAC in the FASTA accepts any REF); else raise or skip."""
        if all(f == r or f not in SNV_BASES for f, r in zip(fasta, ref)):
            return True
        if skip:
            return False
        raise InputError(
            f"VCF {self.path}: record {where} has REF {ref} but FASTA {reference.path} has {fasta}; use the FASTA "
            f"the VCF was called against, or pass --skip-ref-mismatch"
        )
