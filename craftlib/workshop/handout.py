"""Executed notebooks as HTML pages that work offline: widgets, RequireJS and MathJax beside the
page, no CDN.

nbconvert's HTML exporter loads the widget manager (``@jupyter-widgets/html-manager``), RequireJS
and MathJax from CDNs, so an "offline" page renders its widgets blank without a network.
``render_offline`` points every one of those URLs at ``static/`` beside the page and unpacks there
the pinned npm tarballs (``JS_ASSETS``, fetched once from the npm registry into the cache, checked
by SHA-256). Used by ``make html`` (``craftlib.workshop.notebooks``) and by the room kit
(``craftlib.workshop.kit``).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from craftlib.paths import atomic_write, cache_dir

JS_ASSETS = {  # npm tarballs the offline HTML needs: url, SHA-256, licence
    "html-manager": (
        "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.15.tgz",
        "2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638",
        "BSD-3-Clause",
    ),
    "requirejs": (
        "https://registry.npmjs.org/requirejs/-/requirejs-2.3.7.tgz",
        "31f3330c978fb28684622fe71165dc946432cf0210b2ea8a1ca0233e70f2737d",
        "MIT",
    ),
    "mathjax": (
        "https://registry.npmjs.org/mathjax/-/mathjax-2.7.7.tgz",
        "f0054315d40f7288b2373b23520677fd1132a405702dfca05ee6ebe5cd0a8677",
        "Apache-2.0",
    ),
}
MATHJAX_PARTS = (
    "MathJax.js",
    "LICENSE",
    "config/TeX-AMS_CHTML-full.js",
    "config/Safe.js",
    "extensions/",
    "jax/input/TeX/",
    "jax/output/CommonHTML/",
    "jax/element/",
    "fonts/HTML-CSS/TeX/woff/",
    "localization/en/",
)
STATIC_URLS = {  # nbconvert HTMLExporter traits -> what the handout's pages load instead of a CDN
    "require_js_url": "static/require.js",
    "mathjax_url": "static/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "widget_renderer_url": "static/html-manager/embed-amd.js",
    "jupyter_widgets_base_url": "static/",
    "mermaid_js_url": "static/not-included/mermaid.esm.min.mjs",
    "mermaid_layout_elk_js_url": "static/not-included/mermaid-layout-elk.esm.min.mjs",
    "jquery_url": "static/not-included/jquery.min.js",
}


def fetch_js(name: str, folder: Path | None = None) -> Path:
    """The pinned npm tarball ``name`` (``JS_ASSETS``), downloaded once into the cache and
    checksum-verified."""
    import urllib.request

    url, sha, _ = JS_ASSETS[name]
    folder = Path(folder) if folder is not None else cache_dir() / "kit-assets"
    target = folder / url.rsplit("/", 1)[1]
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
        return target
    with urllib.request.urlopen(url, timeout=120) as r:
        blob = r.read()
    if hashlib.sha256(blob).hexdigest() != sha:
        raise OSError(f"{url}: SHA-256 mismatch (expected {sha}); not used")
    return atomic_write(target, lambda tmp: tmp.write_bytes(blob))


def install_static(static: Path) -> Path:
    """Unpack the widget manager, RequireJS and the parts of MathJax the pages use into
    ``static``."""
    static = Path(static)
    stamp = static / ".assets.json"
    wanted = json.dumps({k: v[1] for k, v in JS_ASSETS.items()})
    if stamp.is_file() and stamp.read_text() == wanted:
        return static
    for name in JS_ASSETS:
        with tarfile.open(fetch_js(name), "r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                rel = member.name.split("/", 1)[1]  # drop "package/"
                if name == "html-manager":
                    if not rel.startswith("dist/") or rel.endswith(".map"):
                        continue
                    dest = static / "html-manager" / rel[len("dist/") :]
                elif name == "requirejs":
                    if rel not in ("require.js", "LICENSE"):
                        continue
                    dest = static / (
                        "require.js" if rel == "require.js" else "licenses/requirejs-LICENSE"
                    )
                else:
                    if not any(
                        rel == p or (p.endswith("/") and rel.startswith(p)) for p in MATHJAX_PARTS
                    ):
                        continue
                    dest = static / "mathjax" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
    stamp.write_text(wanted)
    return static


def offline_exporter():
    """nbconvert's HTML exporter with every script it references pointed at ``static/`` beside the
    page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    for trait, url in STATIC_URLS.items():
        if exporter.has_trait(trait):
            setattr(exporter, trait, url)
    return exporter


def render_offline(nb, out: Path) -> Path:
    """Render an executed notebook to ``out`` as a page that needs no network (assets in
    ``out.parent/static``)."""
    install_static(Path(out).parent / "static")
    body, _ = offline_exporter().from_notebook_node(nb)
    return atomic_write(out, lambda tmp: tmp.write_text(body, encoding="utf-8"))
