"""matplotlib figures of the notebooks (one module per group of sections).

Text from outside — instance, route, cache and dependency names, statement text, rule
names — is shown as written: :func:`plain_text`, called by every figure before it is laid
out, escapes ``$`` in every title, label, legend entry, annotation and categorical or fixed
tick label, so matplotlib never parses text between two ``$`` as mathtext (``$\\foo$`` from
a label value would otherwise fail to render, or render as something else). perfbook's own
figure text uses no mathtext.
"""
from __future__ import annotations

from typing import Any

__all__ = ["escape", "plain_text", "finish"]


def escape(text: Any) -> str:
    """``text`` with every ``$`` escaped: matplotlib shows it as written, never as mathtext."""
    return str(text).replace("$", r"\$")


def plain_text(fig: Any) -> Any:
    """Escape ``$`` in every text of ``fig`` (once), before it is drawn; returns ``fig``.

    Titles, axis labels, legend entries, annotations and the suptitle are escaped in place;
    tick labels are produced at each draw by their axis' formatter, so a categorical axis
    (strings plotted as bars) gets a formatter that escapes, and fixed tick labels
    (``set_yticklabels``: a FixedFormatter, or a FuncFormatter in recent matplotlib) are
    escaped in the formatter. Number, date and log formatters are
    left alone (their own mathtext, e.g. ``10^3``, is not text from outside)."""
    from matplotlib.category import StrCategoryFormatter
    from matplotlib.text import Text
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    if getattr(fig, "_perfbook_plain_text", False):
        return fig
    fig._perfbook_plain_text = True
    regenerated: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            regenerated.update(id(t) for t in axis.get_ticklabels(which="both"))
            regenerated.add(id(axis.offsetText))
            for get, put in ((axis.get_major_formatter, axis.set_major_formatter),
                             (axis.get_minor_formatter, axis.set_minor_formatter)):
                f = get()
                if isinstance(f, StrCategoryFormatter) and not isinstance(f, _PlainCategories):
                    put(_PlainCategories(f._units))
                elif isinstance(f, FixedFormatter):
                    f.seq = [escape(s) for s in f.seq]
                elif isinstance(f, FuncFormatter):  # set_yticklabels([...]) in matplotlib >= 3.10
                    f.func = _escaping(f.func)
    for t in fig.findobj(Text):
        if id(t) not in regenerated and "$" in t.get_text():
            t.set_text(escape(t.get_text()))
    return fig


def finish(fig: Any, tight: bool = True) -> Any:
    """A figure ready for the notebook: text escaped (:func:`plain_text`), laid out
    (``tight_layout``, unless the figure lays itself out), and closed, so it is shown by the
    notebook's ``display()`` and not a second time by the inline backend. Returns ``fig``."""
    import matplotlib.pyplot as plt

    plain_text(fig)  # text from outside is shown as written, never as mathtext
    if tight:
        fig.tight_layout()
    plt.close(fig)
    return fig


def _escaping(func: Any) -> Any:
    def escaped(x: Any, pos: Any = None) -> str:
        return escape(func(x, pos))
    return escaped


def _plain_categories_class():
    from matplotlib.category import StrCategoryFormatter

    class PlainCategories(StrCategoryFormatter):
        """Category names as written (``$`` escaped)."""

        def __call__(self, x: Any, pos: Any = None) -> str:
            return escape(super().__call__(x, pos))

        def format_ticks(self, values: Any) -> list[str]:
            return [escape(s) for s in super().format_ticks(values)]

    return PlainCategories


_PlainCategories = _plain_categories_class()
