"""The docs pages' generated blocks (``craftlib.pages``): one syntax, read and written alike."""

from __future__ import annotations

import re

import pytest

from craftlib import pages
from craftlib.paths import REPO_ROOT

PAGE = "\n".join(
    [
        "Intro: the `<!-- t -->` block below is generated.",  # a marker inside prose is not one
        "<!-- t -->",
        "| a |",
        "<!-- /t -->",
        "Between.",
        "<!-- empty -->",
        "<!-- /empty -->",
        "End.\n",
    ]
)


def test_a_block_is_read_and_replaced_with_the_prose_kept():
    assert pages.block(PAGE, "t") == "| a |" and pages.block(PAGE, "empty") == ""
    new = pages.replace(pages.replace(PAGE, "t", "| b |\n| c |"), "empty", "filled")
    assert new == PAGE.replace("| a |", "| b |\n| c |").replace(
        "<!-- empty -->\n", "<!-- empty -->\nfilled\n"
    )
    assert pages.replace(new, "empty", "") == PAGE.replace("| a |", "| b |\n| c |")


@pytest.mark.parametrize(
    "broken",
    [
        PAGE.replace("<!-- /t -->\n", ""),  # never closed
        PAGE + "<!-- t -->\nx\n<!-- /t -->\n",  # twice
        PAGE.replace("<!-- t -->\n", "see <!-- t -->\n"),  # not on a line of its own
    ],
)
def test_a_missing_or_doubled_block_is_an_error_that_names_it(broken):
    with pytest.raises(ValueError, match="doc.md: expected one <!-- t --> ... <!-- /t --> block"):
        pages.block(broken, "t", "doc.md")


def test_update_writes_only_what_changed_and_leaves_a_current_page_alone(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert pages.update(page, {"t": "| a |", "empty": "now"}) == ["empty"]
    assert pages.read_block(page, "empty") == "now" and pages.read_block(page, "t") == "| a |"
    stamp = page.stat().st_mtime_ns
    assert pages.update(page, {"t": "| a |", "empty": "now"}) == []
    assert page.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="<!-- gone -->"):
        pages.update(page, {"gone": "x"})
    assert pages.read_block(page, "empty") == "now"  # a failed update wrote nothing


def test_every_block_in_the_docs_is_closed_exactly_once():
    """Each ``<!-- name -->`` opener in README and docs/ has its one closer, so every command and
    test that reads a block finds it."""
    opener = re.compile(r"^<!-- ([\w:.-]+) -->$", re.M)
    seen = 0
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for name in set(opener.findall(text)):
            pages.block(text, name, str(path))
            seen += 1
    assert seen >= 15  # RESULTS, PERFORMANCE, STUDY, ARCHITECTURE and README hold them
