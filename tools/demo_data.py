"""Build the demo model's training corpus: Jane Austen's six novels from Debian.

Source: the Debian package ``r-cran-janeaustenr`` (CRAN package janeaustenr 1.0.0, MIT licence for
the packaging; the novels themselves are Project Gutenberg texts in the public domain). The
package stores the novels as R character vectors (one element per line of the Gutenberg text) in
an R lazy-load database, ``data/Rdata.rdb`` + ``Rdata.rdx``. We read it with the PyPI package
``rdata`` (pure Python; only this tool needs it, not the runtime):

    apt-get download r-cran-janeaustenr          # no install: R itself is not needed
    pip install rdata==1.1.0                     # into any venv
    python tools/demo_data.py --deb r-cran-janeaustenr_1.0.0-1_all.deb --out build/demo

Output in ``--out``: ``train.txt`` and ``valid.txt``, one paragraph per line (UTF-8), and
``split.json`` with counts. Preprocessing is documented in docs/demo-model.md and implemented in
``clean_novel`` below; the validation split is the last ``VALID_FRACTION`` of every novel's
paragraphs (a contiguous tail, so no sentence of it is seen in training).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

VALID_FRACTION = 0.05
RDATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
NOVEL_ORDER = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)
# Headings carry no prose; a model trained on them spends capacity on "CHAPTER XLII".
HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume)\b[\s\dIVXLC.]*$")
# End markers and section-break asterisks are not prose either.
ORNAMENT = re.compile(r"^(THE END|FINIS|[* ]+)$")


def extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack a .deb with dpkg-deb (no install) and return the janeaustenr data folder."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest / RDATA_DIR


def _unserialize(payload: bytes) -> object:
    """Parse one R serialization stream (XDR) with the rdata package into Python values."""
    import rdata  # only this offline tool needs it

    parsed = rdata.parser.parse_data(payload)
    return rdata.conversion.convert(parsed)


def read_lazyload_db(data_dir: Path) -> dict[str, list[str]]:
    """Read every character vector in an R lazy-load database (Rdata.rdx index + Rdata.rdb).

    The .rdx file is a gzip'd serialization of list(variables = list(name = c(offset, length)));
    each .rdb record at that offset is a 4-byte big-endian uncompressed length followed by a zlib
    stream holding the object's serialization.
    """
    index = _unserialize(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    blob = (data_dir / "Rdata.rdb").read_bytes()
    novels: dict[str, list[str]] = {}
    for name, (offset, length) in index["variables"].items():
        record = blob[int(offset) : int(offset) + int(length)]
        expected = struct.unpack(">I", record[:4])[0]
        payload = zlib.decompress(record[4:])
        if len(payload) != expected:
            raise ValueError(f"{name}: rdb record length {len(payload)} != header {expected}")
        lines = _unserialize(payload)
        novels[str(name)] = [str(line) for line in lines]
    return novels


def clean_novel(lines: list[str]) -> list[str]:
    """Turn one novel's Gutenberg lines into cleaned paragraphs.

    Steps: blank lines separate paragraphs; lines of a paragraph are joined with one space; the
    title block before the first chapter heading, every chapter/volume heading, "THE END"/"FINIS"
    and rows of asterisks are dropped;
    underscores (Gutenberg's italics markers) are removed; runs of whitespace become one space;
    non-ASCII characters are kept as they are (byte fallback encodes them).
    """
    paragraphs: list[str] = []
    current: list[str] = []
    seen_heading = False
    for raw in lines + [""]:
        line = raw.strip()
        if line:
            current.append(line)
            continue
        if not current:
            continue
        text = " ".join(current)
        current = []
        if HEADING.match(text):
            seen_heading = True
            continue
        if not seen_heading or ORNAMENT.match(text):
            continue
        text = text.replace("_", "")
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            paragraphs.append(text)
    return paragraphs


def split_paragraphs(paragraphs: list[str]) -> tuple[list[str], list[str]]:
    """Hold out the last VALID_FRACTION of a novel's paragraphs (at least one)."""
    n_valid = max(1, round(len(paragraphs) * VALID_FRACTION))
    return paragraphs[:-n_valid], paragraphs[-n_valid:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deb", type=Path, help="r-cran-janeaustenr .deb (default: apt download)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True)
            deb = next(Path(tmp).glob("r-cran-janeaustenr_*.deb"))
        novels = read_lazyload_db(extract_deb(deb.resolve(), Path(tmp) / "x"))
    train: list[str] = []
    valid: list[str] = []
    counts = {}
    for name in NOVEL_ORDER:
        paragraphs = clean_novel(novels[name])
        tr, va = split_paragraphs(paragraphs)
        train.extend(tr)
        valid.extend(va)
        counts[name] = {"train_paragraphs": len(tr), "valid_paragraphs": len(va)}
    (args.out / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (args.out / "valid.txt").write_text("\n".join(valid) + "\n", encoding="utf-8")
    counts["train_chars"] = sum(len(p) + 1 for p in train)
    counts["valid_chars"] = sum(len(p) + 1 for p in valid)
    (args.out / "split.json").write_text(json.dumps(counts, indent=1) + "\n")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
