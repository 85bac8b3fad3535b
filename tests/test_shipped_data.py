"""Every file under data/ is listed in data/README.md with the sha256 it really has."""
import gzip
import hashlib
import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<bytes>[\d,]+) \| (?P<rows>[\d,-]+) \| `(?P<sha>[0-9a-f]{64})` \| (?P<raw>`[0-9a-f]{64}`|-) \|$")


def _table():
    rows = {}
    for line in (DATA / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match["file"]] = match
    return rows


TABLE = _table()


def test_every_shipped_file_is_documented():
    shipped = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"}
    assert shipped == set(TABLE), "data/README.md file table and data/ disagree"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_checksum_and_size(name):
    row = TABLE[name]
    blob = (DATA / name).read_bytes()
    assert len(blob) == int(row["bytes"].replace(",", ""))
    assert hashlib.sha256(blob).hexdigest() == row["sha"]
    if row["raw"] != "-":
        assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == row["raw"].strip("`")
