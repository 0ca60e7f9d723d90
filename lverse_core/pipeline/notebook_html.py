"""Executed notebooks as self-contained HTML pages that render offline: images embedded, equations as MathML, no
script fetched from a CDN, and no folder of the building machine in the text (``scrub_local_paths``)."""
from __future__ import annotations

import re
from pathlib import Path

from lverse_core.config import REPO_ROOT

_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$", re.S)
_CDN_SCRIPT = re.compile(r'<script[^>]+src="https?://[^"]+"[^>]*>\s*</script>\s*', re.I)


def _math_to_placeholders(text: str, store: list[str]) -> str:
    """Replace each $...$ / $$...$$ with a plain-word placeholder and keep its MathML in ``store``.

    The markdown renderer would mangle MathML written into the cell source, so the MathML goes into the finished
    page instead, where the placeholders stand.
    """
    import latex2mathml.converter as l2m

    def repl(m: re.Match) -> str:
        tex, display = (m.group(1), "block") if m.group(1) is not None else (m.group(2), "inline")
        try:
            store.append(l2m.convert(tex.strip(), display=display))
        except Exception:  # what the converter cannot parse stays visible as TeX source
            return m.group(0)
        return f"LVERSEMATH{len(store) - 1}X"

    return _MATH.sub(repl, text)


_OFFLINE_TEMPLATE = "lverse_offline.html.j2"


def _offline_loader():
    """The JupyterLab page template without its MathJax, Mermaid and require.js scripts (all fetched from a CDN)."""
    from jinja2 import DictLoader

    return DictLoader({_OFFLINE_TEMPLATE: "{%- extends 'lab/index.html.j2' -%}\n"
                                          "{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}\n"
                                          "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
                                          "{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}\n"})


def scrub_local_paths(text: str) -> str:
    """``text`` without the building machine's folders: files under the work directory or the repo become relative
    paths, installed packages ``<site-packages>/...``, the standard library ``<stdlib>/...``, the home folder ``~``.
    Pages are shared; where a user keeps the kit is not theirs to publish."""
    import sysconfig

    from lverse_core.config import workdir

    paths = sysconfig.get_paths()
    # prefix -> (what a path under it becomes, what the bare folder becomes)
    names = {paths["purelib"]: ("<site-packages>/", "<site-packages>"),
             paths["platlib"]: ("<site-packages>/", "<site-packages>"), paths["stdlib"]: ("<stdlib>/", "<stdlib>"),
             str(workdir()): ("", "<workdir>"), str(REPO_ROOT): ("", "<repo>"), str(Path.home()): ("~/", "~")}
    for prefix in sorted((p for p in names if p and p != "/"), key=len, reverse=True):
        under, bare = names[prefix]
        for variant in {prefix, str(Path(prefix).resolve())}:
            text = text.replace(variant + "/", under)
            text = re.sub(re.escape(variant) + r"(?![\w-]|\.\w)", bare, text)
    return text


def notebook_to_html(executed: Path, out: Path) -> Path:
    """A self-contained HTML page: embedded images, equations as MathML, no scripts fetched from the network."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    maths: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _math_to_placeholders(cell.source, maths)
    exporter = HTMLExporter(template_name="lab", template_file=_OFFLINE_TEMPLATE, extra_loaders=[_offline_loader()],
                            embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    body = _CDN_SCRIPT.sub("", body)  # belt and braces: no <script src="http..."> survives
    body = re.sub(r"LVERSEMATH(\d+)X", lambda m: maths[int(m.group(1))], body)
    body = scrub_local_paths(body)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body)
    return out
