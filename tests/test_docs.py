"""The documentation site builds offline with warnings as errors, shows the generated benchmark results, and a
broken reference fails the build."""
import contextlib
import io
import re
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")  # Sphinx API notices

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("jupytext")
from sphinx.cmd.build import build_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def build(source: Path, out: Path, builder: str = "html"):
    """``sphinx -W --keep-going -E -b builder`` in this process (the packages are imported once): status, warnings."""
    warnings = io.StringIO()
    with contextlib.redirect_stderr(warnings):
        status = build_main(["-q", "-W", "--keep-going", "-E", "-b", builder, str(source), str(out)])
    return status, warnings.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return (*build(DOCS, out), out)


def test_site_builds_without_warnings(site):
    status, warnings, _ = site
    assert status == 0 and not warnings, warnings


def _text(page: Path) -> str:
    """Visible text of an HTML page, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", page.read_text()).split())


def test_benchmark_pages_show_the_generated_tables_and_plots(site):
    *_, out = site
    for name in ("fewshot_table", "ablations", "generalisation_gap", "classifier_inputs", "tox21_10shot",
                 "deployment_tox21", "adaptation_mode", "official_comparison", "speed", "speed_gpu", "scoring_speed",
                 "baseline_speed"):
        generated = (RESULTS / f"{name}.md").read_text()
        first_row = next(line for line in generated.splitlines() if line.startswith("| ") and "---" not in line)
        cells = [c.strip().replace("`", "") for c in first_row.strip("|").split("|")]
        page = _text(out / "benchmarks" / f"{name}.html")
        assert all(" ".join(cell.split()) in page for cell in cells if cell), name    # the header row, as generated
    images = {p.name for p in (out / "_images").iterdir()}
    assert {"fewshot_table.png", "fewshot_table_per_property.png", "ablations.png", "generalisation_gap.png",
            "classifier_inputs.png", "tox21_10shot.png", "encoder_comparison.png", "schnet_transfer_hopv.png",
            "schnet_transfer_freesolv.png"} <= images


def test_tutorials_and_api_reference_are_rendered(site):
    *_, out = site
    for tutorial in sorted((DOCS / "tutorials").glob("*.py")):
        page = (out / "tutorials" / f"{tutorial.stem}.html").read_text()
        assert 'class="highlight-python' in page                                    # code cells as Python blocks
        assert "# %%" not in page                                                   # cell markers are gone
    api = _text(out / "api" / "deepchem_pintuning.html")
    for name in ("PinTuningModel", "load_fewshot", "EpisodeSampler", "adaptation_embeddings", "roc_pr_curves"):
        assert "deepchem_pintuning" in api and name in api, name
    schnet = _text(out / "api" / "schnet_transfer.html")
    assert "StandardizeProperty" in schnet and "FineTuneTask" in schnet


@pytest.fixture()
def docs_copy(tmp_path):
    """The documentation sources in a temporary folder, next to the benchmark results they include."""
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build"))
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    return tmp_path / "docs"


BROKEN = {   # a reference of each kind -> what the warning names
    "{doc}`concepts/nowhere`": "concepts/nowhere",
    "[the speed table](benchmarks/no_such_page.md)": "no_such_page",
    "{func}`deepchem_pintuning.data.load_fewshot_typo`": "load_fewshot_typo",
    "[protocols](concepts/protocols.md#no-such-section)": "no-such-section",
}


def test_a_broken_reference_fails_the_build(docs_copy, tmp_path):
    page = docs_copy / "citing.md"
    page.write_text(page.read_text() + "".join(f"\nSee also {reference}.\n" for reference in BROKEN))
    status, warnings = build(docs_copy, tmp_path / "out", "dummy")
    assert status != 0
    lines = warnings.strip().splitlines()
    assert len(lines) == len(BROKEN) and all("citing.md" in line for line in lines), warnings
    for reported in BROKEN.values():
        assert sum(reported in line for line in lines) == 1, (reported, warnings)


def test_tutorial_cells_become_markdown_and_python_blocks():
    sys.path.insert(0, str(DOCS / "_ext"))
    from percent_scripts import percent_script_to_markdown
    text = percent_script_to_markdown("# %% [markdown]\n# # A title\n# Some *text*.\n\n# %%\nx = 1\nprint(x)\n")
    assert text.splitlines() == ["# A title", "Some *text*.", "", "```python", "x = 1", "print(x)", "```"]
