"""The documentation site's generated pages are current, and list every public name
(`make docs` builds the site itself, strict, in CI)."""

import pathlib

import yaml

import jaxmirror as jm
from jaxmirror import _docs_reference


ROOT = pathlib.Path(__file__).parents[1]


def test_every_public_name_has_an_entry():
    listed = [name for names in _docs_reference.SECTIONS.values() for name in names]
    assert sorted(listed) == _docs_reference.public_names()
    page = (ROOT / "docs" / "api.md").read_text()
    for name in listed:
        assert f"::: jaxmirror.{name}\n" in page
        assert hasattr(jm, name)


def test_generated_pages_are_current():
    for name, page in _docs_reference.PAGES.items():
        assert (ROOT / "docs" / name).read_text() == page(), (
            f"docs/{name} is stale: python -m jaxmirror._docs_reference"
        )


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values()))
            yield from pages(value) if isinstance(value, list) else [value]

    in_nav = set(pages(config["nav"]))
    on_disk = {
        str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")
    }
    # Every notebook is a page too (docs/notebooks links to notebooks/).
    on_disk |= {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert in_nav == on_disk
