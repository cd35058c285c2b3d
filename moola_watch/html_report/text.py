"""Strings from a log made inert for the page: shown as text, never obeyed as markup or script.

Two places take text: the HTML around the plots, and plotly, which reads a small subset of HTML in titles,
legends, ticks and hover labels (``<b>``, ``<br>``, ``<a href>``). Both get the same entity escaping, so
``<script>`` in a layer name is drawn as the characters it is. Control and invisible characters are
made visible first, as on the terminal.
"""

from __future__ import annotations

from moola_watch.textsafe import inert

SHORT = 48  # characters of a name shown on an axis or in a legend; hover shows the whole (escaped) name


def escaped(value: object, limit: int = 1000) -> str:
    """``value`` as entity-escaped text, for HTML and for plotly labels alike."""
    return _entities(inert(value, limit=limit))


def short(value: object, limit: int = SHORT) -> str:
    """A long name cut in the middle (``encoder.layers.1…q_proj.weight``) and escaped: for axes and legends."""
    text = inert(value, limit=1000)
    if len(text) > limit:
        keep = limit - 1
        text = text[: keep // 3] + "…" + text[-(keep - keep // 3) :]
    return _entities(text)


def layer_labels(names: list[str], limit: int) -> list[str]:
    """Axis labels for layer names, each at most about ``limit`` characters and no two alike (plotly draws rows
    of one label as one row). A long name first loses the letters of its leading parts, never a number
    (``bert.encoder.layer.1.attention.self.query.weight`` -> ``b.e.l.1.attention.self.query.weight``: the block
    index tells the rows apart), as logback shortens a logger's name; one still too long is cut in the middle;
    a label that still repeats one above it gets its row's number."""
    labels = []
    for name in names:
        text = inert(name, limit=1000)
        parts = text.split(".")
        for index in range(len(parts) - 1):
            if len(".".join(parts)) <= limit:
                break
            if not parts[index].isdigit():
                parts[index] = parts[index][:1]
        labels.append(short(".".join(parts), limit))
    seen: set[str] = set()
    for row, label in enumerate(labels):
        if label in seen:
            labels[row] = f"{label} #{row + 1}"
        seen.add(labels[row])
    return labels


# Only entities that both HTML and plotly's label renderer decode (plotly knows &amp; &lt; &gt; and numeric ones,
# not &quot;). ``%`` too: plotly fills ``%{...}`` in hover templates, and a name must not pull values into a label.
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "%": "&#37;"})


def _entities(text: str) -> str:
    return text.translate(_ENTITIES)
