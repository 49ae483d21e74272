"""The rule that keeps measured numbers out of static prose (utils.course.check.static_numbers)."""
import nbformat
import pytest

from utils.course.check import NUMBERS_ALLOWLIST, static_numbers


def _root(tmp_path, markdown: str, page: str = "", allow: str = "[]"):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell("x = 0.5")])
    nbformat.write(nb, tmp_path / "solutions" / "99_demo.ipynb")
    (tmp_path / "book" / "chapters" / "99_demo.md").write_text(page)
    (tmp_path / NUMBERS_ALLOWLIST).mkdir()
    (tmp_path / NUMBERS_ALLOWLIST / "99_demo.yml").write_text(allow)
    return tmp_path


def test_rule_fires_on_decimals_and_percentages(tmp_path):
    root = _root(tmp_path, "The agent succeeds 0.91 of the time.\n\nIt beats chance by 40%.", page="Recovers 95.6% of it.")
    found = static_numbers(root)
    assert len(found) == 3
    assert any("'0.91'" in f for f in found) and any("'40%'" in f for f in found) and any("95.6" in f for f in found)
    assert all("print it from the run" in f for f in found)


def test_code_math_links_problem_ids_and_code_cells_are_not_prose(tmp_path):
    md = ("Set `gamma=0.99` and $\\epsilon = 0.1$; see [v](https://x.org/1.2). "
          "Problems 8.15-8.18 and 8.21.")
    assert static_numbers(_root(tmp_path, md)) == []


def test_allowlist_needs_a_reason_and_matches_the_line(tmp_path):
    md = "DPO uses beta 0.1, the source's value.\n\nMeasured: 0.83."
    allow = "- file: solutions/99_demo.ipynb\n  text: beta 0.1\n  reason: a hyperparameter\n"
    found = static_numbers(_root(tmp_path, md, allow=allow))
    assert len(found) == 1 and "'0.83'" in found[0]


def test_allowlist_entry_without_reason_is_an_error(tmp_path):
    allow = "- file: solutions/99_demo.ipynb\n  text: beta 0.1\n"
    with pytest.raises(ValueError, match="reason"):
        static_numbers(_root(tmp_path, "beta 0.1", allow=allow))
