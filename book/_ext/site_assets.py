"""Sphinx extension: the site's own static assets, so a built site works offline.

- MathJax is served from the site itself, never from a CDN at page-view time. At build
  time this fetches a pinned MathJax release from the npm registry (checked against the
  registry's published sha512 integrity), keeps the files the CHTML renderer loads, caches
  them (``offline_mathjax_cache``; `python -m utils.course book` puts it under
  _build/mathjax) and adds them to the site's static files as ``_static/mathjax/``.
  ``mathjax_path`` in _config.yml points at the local copy.
  With no registry at hand, put the tarball (`npm pack mathjax@<version>`) in the cache
  folder and the build uses it.
- ``course.css`` (next to this file): long code lines wrap inside the column instead of
  being cut at the cell's edge, and the folded plumbing cells read as one-line captions.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from sphinx.errors import ExtensionError

MATHJAX_VERSION = "3.2.2"
MATHJAX_TARBALL = f"https://registry.npmjs.org/mathjax/-/mathjax-{MATHJAX_VERSION}.tgz"
# `npm view mathjax@3.2.2 dist.integrity`
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
MATHJAX_ENTRY = "tex-mml-chtml.js"  # what Sphinx loads by default, here from _static/mathjax/
# What the combined TeX+MathML -> CHTML component loads at run time: TeX extensions
# (autoload), the CHTML fonts, the context menu and its accessibility tools.
_KEEP = ("es5/tex-mml-chtml.js", "es5/input/", "es5/output/chtml/", "es5/ui/", "es5/a11y/", "es5/sre/",
         "es5/adaptors/", "LICENSE")
HERE = Path(__file__).parent


def _integrity_ok(data: bytes) -> bool:
    algo, _, digest = MATHJAX_INTEGRITY.partition("-")
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest


def _tarball(cache: Path) -> bytes:
    local = cache / f"mathjax-{MATHJAX_VERSION}.tgz"
    if local.exists():
        data = local.read_bytes()
        if _integrity_ok(data):
            return data
    try:
        with urllib.request.urlopen(MATHJAX_TARBALL, timeout=60) as r:
            data = r.read()
    except OSError as e:
        raise ExtensionError(
            f"could not fetch MathJax {MATHJAX_VERSION} from the npm registry ({MATHJAX_TARBALL}: {e}); the site "
            f"serves MathJax itself so that math renders offline. Reach the registry once, or put "
            f"`npm pack mathjax@{MATHJAX_VERSION}` output at {local}") from None
    if not _integrity_ok(data):
        raise ExtensionError(f"{MATHJAX_TARBALL} does not match its pinned integrity {MATHJAX_INTEGRITY}")
    cache.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return data


def mathjax_static_dir(cache: Path) -> Path:
    """A folder holding `mathjax/<files>` for html_static_path, fetched and unpacked once."""
    target = cache / f"mathjax-{MATHJAX_VERSION}-static"
    if (target / "mathjax" / MATHJAX_ENTRY).exists():
        return target
    data = _tarball(cache)
    tmp = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=cache))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("package/")
                if not member.isfile() or ".." in Path(name).parts or not name.startswith(_KEEP):
                    continue
                dest = tmp / "mathjax" / name.removeprefix("es5/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src:
                    dest.write_bytes(src.read())
        if not (tmp / "mathjax" / MATHJAX_ENTRY).exists():
            raise ExtensionError(f"the MathJax {MATHJAX_VERSION} tarball has no es5/{MATHJAX_ENTRY}")
        try:
            os.rename(tmp, target)
        except OSError:  # another build unpacked it meanwhile
            if not (target / "mathjax" / MATHJAX_ENTRY).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _config_inited(app, config):
    cache = Path(config.offline_mathjax_cache or "_build/mathjax")
    if not cache.is_absolute():
        cache = Path(app.confdir) / cache
    cache.mkdir(parents=True, exist_ok=True)
    static = mathjax_static_dir(cache.resolve())
    local = f"mathjax/{MATHJAX_ENTRY}"
    if not config.mathjax_path or "://" in config.mathjax_path:
        config.mathjax_path = local
    if config.mathjax_path != local:
        raise ExtensionError(f"mathjax_path is {config.mathjax_path!r}: set it to {local!r} (the site's own copy)")
    config.html_static_path = [*config.html_static_path, str(static), str(HERE / "static")]


def setup(app):
    app.add_config_value("offline_mathjax_cache", "", "env")
    app.connect("config-inited", _config_inited)
    app.add_css_file("course.css")
    return {"version": MATHJAX_VERSION, "parallel_read_safe": True, "parallel_write_safe": True}
