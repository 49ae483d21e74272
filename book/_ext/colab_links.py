"""Sphinx extension: ```{colab-links} <chapter id>``` renders Open-in-Colab links for a
chapter's exercise and solution notebooks, built from the repository URL in
_config.yml (the one place it is set)."""
from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Directive

COLAB = "https://colab.research.google.com/github"


def colab_url(repository_url: str, branch: str, path: str) -> str:
    repo = repository_url.rstrip("/").removeprefix("https://github.com/")
    return f"{COLAB}/{repo}/blob/{branch}/{path}"


class ColabLinks(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        chapter = self.arguments[0]
        env = self.state.document.settings.env
        opts = env.config.html_theme_options or {}
        url = opts.get("repository_url")
        if not url:
            raise self.error("colab-links needs repository.url in _config.yml")
        branch = opts.get("repository_branch") or "main"
        links = [("Open the exercises in Colab", f"notebooks/{chapter}.ipynb", "colab-exercises"),
                 ("Open the solutions in Colab", f"solutions/{chapter}.ipynb", "colab-solutions")]
        html = "".join(
            f'<a class="sd-btn sd-btn-primary colab-link {cls}" href="{colab_url(url, branch, path)}" '
            f'target="_blank" rel="noopener">{label}</a> '
            for label, path, cls in links)
        return [nodes.raw("", f'<p class="colab-links">{html}</p>', format="html")]


def setup(app):
    app.add_directive("colab-links", ColabLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
