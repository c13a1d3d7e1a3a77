"""`perfbook bundle RUN`: a run's report as one self-contained HTML file for a postmortem
document, a ticket or an e-mail — the index, every section page and the comparisons, one
after the other with a navigation bar, images inline (the pages already carry them as
``data:`` URIs), code folded as on the pages, the reports' Content-Security-Policy; and,
with ``--zip``, a zip of that file with the executed notebooks, findings.json and
manifest.json.

It only rearranges pages the run already wrote (redacted when written); the result is
checked against the run's redactor before it is written, and never overwrites a file.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from .files import write_new

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'"
#: What --zip adds beside the bundle: the run's machine-readable files and executed notebooks.
ZIP_EXTRA = ("findings.json", "manifest.json", "compare.json", "*.ipynb", "snapshots/*.json")


class BundleError(ValueError):
    """The run folder cannot be bundled (one line, naming the folder and why)."""


def pages_of(run_dir: Path) -> list[tuple[str, str]]:
    """(anchor, file) of the pages to bundle, in reading order: index, sections, comparisons."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{run_dir}: no manifest.json: not a perfbook run folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{run_dir}: manifest.json cannot be read: {str(exc)[:200]}") from None
    if isinstance(manifest, dict) and manifest.get("kind") == "fleet":
        raise BundleError(f"{run_dir}: a fleet's folder; bundle each service's run (the fleet page links them)")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("notebooks"), list):
        raise BundleError(f"{run_dir}: manifest.json is not a perfbook run manifest")
    if manifest.get("status") == "running":
        raise BundleError(f"{run_dir}: this run is still running; bundle it when it has finished")
    if not (run_dir / "index.html").is_file():
        raise BundleError(f"{run_dir}: no index.html")
    pages = [("index", "index.html")]
    for nb in manifest["notebooks"]:
        page = nb.get("html") if isinstance(nb, dict) else None
        if isinstance(page, str) and re.fullmatch(r"[\w.-]+\.html", page) and (run_dir / page).is_file():
            pages.append((_anchor(page), page))
    from .comparison import comparisons_in
    for c in comparisons_in(run_dir):
        pages.append((_anchor(c["html"]), c["html"]))
    return pages


def _anchor(page: str) -> str:
    return "p-" + re.sub(r"[^\w-]", "-", page.removesuffix(".html"))


def bundle_html(run_dir: str | Path) -> str:
    """The one-file report of ``run_dir``."""
    from bs4 import BeautifulSoup

    run_dir = Path(run_dir)
    pages = pages_of(run_dir)
    anchor_of = {page: anchor for anchor, page in pages}
    styles: list[str] = []
    seen_styles: set[str] = set()
    parts: list[str] = []
    title = run_dir.name
    body_attrs = ""
    for anchor, page in pages:
        soup = BeautifulSoup((run_dir / page).read_text(encoding="utf-8", errors="replace"), "html.parser")
        for tag in soup.find_all(["script", "iframe", "object", "embed", "link", "base"]):
            tag.decompose()      # the pages have none; a bundle must not gain any
        if page == "index.html" and soup.title:
            title = soup.title.get_text()
        for st in soup.find_all("style"):
            text = st.get_text()
            if text not in seen_styles:
                seen_styles.add(text)
                styles.append(text)
        body = soup.body or soup
        if page != "index.html" and soup.body is not None and not body_attrs:
            body_attrs = " ".join(f'{k}="{" ".join(v) if isinstance(v, list) else v}"'
                                  for k, v in soup.body.attrs.items() if re.fullmatch(r"[\w-]+", k))
        # ids and in-page links of this page, prefixed so that pages never collide
        for tag in body.find_all(id=True):
            tag["id"] = f"{anchor}--{tag['id']}"
        for a in body.find_all("a", href=True):
            href = str(a["href"])
            if href.startswith("#"):
                a["href"] = f"#{anchor}--{href[1:]}"
            else:
                target = href.split("#", 1)[0]
                if target in anchor_of:
                    a["href"] = f"#{anchor_of[target]}"
                elif not re.match(r"(https?|mailto):", href):
                    a["title"] = f"{href}: in the run folder, not in this file"
        inner = "".join(str(c) for c in body.contents)
        parts.append(f"<section id='{anchor}' class='perfbook-bundled'><div class='perfbook-bundle-page'>"
                     f"{_esc(page)}</div>{inner}</section>")
    nav = " · ".join(f"<a href='#{a}'>{_esc(p.removesuffix('.html'))}</a>" for a, p in pages)
    style = "\n".join(f"<style>{s}</style>" for s in styles)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{_esc(title)} (one file)</title>
{style}
<style>
nav.perfbook-bundle-nav {{ position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc;
  padding: 6px 12px; font-size: .9em; z-index: 10; }}
section.perfbook-bundled {{ border-top: 4px solid #888; margin-top: 24px; padding-top: 8px; }}
.perfbook-bundle-page {{ color: #888; font-size: .8em; }}
</style></head><body {body_attrs}>
<nav class="perfbook-bundle-nav"><b>perfbook — {_esc(run_dir.name)}</b> · {nav}</nav>
{''.join(parts)}
</body></html>"""


def _esc(s: Any) -> str:
    import html
    return html.escape(str(s))


def write_bundle(run_dir: str | Path, output: str | Path | None = None, *, zip_too: bool = False) -> list[Path]:
    """Write the bundle (default ``RUN/perfbook-<run>.html``) and, ``zip_too``, the zip beside
    it; never over an existing file. Returns the paths written."""
    from .comparison import run_redactor

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BundleError(f"{run_dir}: no such run folder")
    out = Path(output) if output else run_dir / f"perfbook-{run_dir.name}.html"
    if out.suffix == ".zip":
        out = out.with_suffix(".html")
    text = bundle_html(run_dir)
    redact = run_redactor(run_dir)
    written = [write_new(out, text, redact)]
    if zip_too:
        import io
        zpath = out.with_suffix(".zip")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(out, out.name)
            for pattern in ZIP_EXTRA:
                for f in sorted(run_dir.glob(pattern)):
                    if f.is_file():
                        z.write(f, f"{run_dir.name}/{f.relative_to(run_dir).as_posix()}")
        write_new(zpath, buf.getvalue())
        written.append(zpath)
    return written
