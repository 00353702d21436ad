"""The Gradio cross-modal search app over one or more index directories.

    mmssl demo --index runs/demo/code-index --index runs/demo/doc-index [--host 127.0.0.1 --port 7860]

Each index directory says what it holds (``modality``) and what queries it (``query_modality``);
the app groups the indexes by that pair and gives each pair a tab (``demo.search.TABS``: text→code,
code→text, text→image, image→text). A tab has an index picker (when more than one index serves
it), the query input (a text box, a code box, or an image to upload or pick from the examples), a
``k`` slider, the search mode (dense, and lexical / hybrid when the index has a BM25 side and the
query is text; it starts on the index's own default, chosen on validation queries), example
queries taken from the index itself, a filter by where the items come from (standard library,
installed packages, one package: ``demo.search.filters_of``) and an "about this index" panel from
its manifest (what the collection holds and how much of it is searchable, its licences, the model,
how the default mode was chosen). A tab whose model stopped before its steps says so above the
query. Enter searches. Results (``demo.results``) say how many, how long the search took, and when
the best score is weak for the index (calibrated on its validation queries, ``indexing.modes``);
code results show the function's name, the first line of its docstring, its code numbered as in
its file and folded after a few lines, a link to the source where one is known, and the query's
words marked; images come as a grid captioned with their names and scores; captions found by
image come beside the thumbnail of the image they belong to. "more results" asks for more.

Every search is a named API endpoint (``/text_to_code``, ``/code_to_text``, ``/text_to_image``,
``/image_to_text``) with parameters ``query``, ``index``, ``k`` (int), ``mode`` and ``within`` (a
filter, "FIELD=VALUE" from the index's menu; "" for everything), returning {"hits": [rank, id, score,
text, payload], "took_ms", "note"} (the payload's ``path`` is named ``file_path`` there, see
``demo.search.api_hit``), callable with ``gradio_client``:

    from gradio_client import Client
    result = Client("http://127.0.0.1:7860/").predict("read a csv file", "code-index", 5, "dense",
                                                       "origin=stdlib", api_name="/text_to_code")

Safe defaults: binds 127.0.0.1 unless told otherwise; a bounded queue (``max_size``) and
concurrency; queries limited in length; query images limited in bytes (Gradio refuses larger
uploads), pixels and aspect ratio, checked from the file's header before it is decoded
(``demo.uploads``); a failed search shows the user a one-line message, never a stack trace; the app
serves no file from disk but its own: result and example images are read by the app from the paths
their index records, downsized and sent as images, and nothing else outside the index directories
is read; those images and the uploaded query images live in a folder made for the run
(``serving``, ``launch``), uploads are deleted after an hour, and the folder when the app stops.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from demo.results import css, render_hits, thumbnail
from demo.search import (
    EVERYTHING,
    EXAMPLE_FIELD,
    FIRST_K,
    MAX_K,
    MAX_QUERY_CHARS,
    MORE_K,
    TABS,
    LoadedIndex,
    TabSpec,
    run_search,
)
from demo.uploads import (
    DELETE_CACHE,
    MAX_UPLOAD_BYTES,
    SearchError,
    pin_mmap_threshold,
    private_temp_dir,
)
from mmssl.console import get_logger

log = get_logger("demo")

QUEUE_SIZE = 64
CONCURRENCY = 2  # searches in flight at once; each already uses every core (torch, FAISS)


def model_line(path: str | None) -> str:
    """The index's model as the about panel names it: its folder, and what an ONNX export is."""
    from mmssl.export.onnx_encoder import describe, is_onnx_export

    if not path:
        return "?"
    return f"`{Path(path).name}`" + (f", {describe(path)}" if is_onnx_export(path) else "")


def about(item: LoadedIndex) -> str:
    m = item.index.manifest
    params = ", ".join(f"{k}={v}" for k, v in m.search_params.items()) or "none (exact)"
    recall = m.tuning.get("recall")
    card = m.collection
    available = card.get("available")
    of = f" of the collection's {available:,}" if isinstance(available, int) and available > len(item.index) else ""
    lines = [
        f"**{item.name}**: {len(item.index):,}{of} {m.modality or 'item'} items searchable, "
        f"searched with {m.query_modality} queries",
    ]
    if card.get("holds"):
        lines.append(f"- holds: {card['holds']}" + (f" (`{Path(card['data']).name}`)" if card.get("data") else ""))
    licences = card.get("licences")
    if licences:
        listed = licences.items() if isinstance(licences, dict) else [("", licences)]
        lines.append("- licences: " + "; ".join(f"{k}: {v}" if k else str(v) for k, v in listed))
    lines += [
        f"- model: {model_line(m.model_path)} (sha256 {(m.model_sha256 or '?')[:12]}…)",
        f"- index: `{m.factory}` ({m.index_type}), {m.dim}-d inner product, search parameters {params}"
        + (f", tuned recall@10 {recall:.3f}" if recall is not None and m.search_params else ""),
        f"- lexical side (BM25): {'yes' if m.lexical else 'no'}; built {m.created[:19].replace('T', ' ')}",
    ]
    chosen = m.search_defaults
    if chosen.get("mrr"):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in chosen["mrr"].items())
        lines.append(
            f"- starts in **{item.default_mode}** mode (BM25 weight {item.lexical_weight:g}), chosen on "
            f"{chosen.get('queries', '?')} validation queries ({chosen.get('chosen_on', '?')}); MRR {scores}"
        )
    return "\n".join(lines)


def notice_of(item: LoadedIndex) -> str:
    """A warning for the tab when the index's model stopped before the steps it was asked for (its
    ``training.json``, written by the trainer), else ""."""
    from mmssl.engine.trainer import TRAINING_FILE
    from mmssl.io import read_json_object

    model = item.index.manifest.model_path
    path = Path(model) / TRAINING_FILE if model else None
    if path is None or not path.is_file():
        return ""
    try:
        done = read_json_object(path)
        step, asked = int(done["step"]), int(done["max_steps"])
    except (ValueError, KeyError, TypeError):
        return ""
    if step >= asked:
        return ""
    why = done.get("stopped_by", "stopped early")
    return (
        f"⚠️ The model of **{item.name}** was trained {step:,} of its {asked:,} steps ({why}): its results are "
        "weaker than the finished model's would be."
    )


def natural_query(text: str) -> str | None:
    """A docstring's first line as a query someone would type ("Return the number of items."
    → "return the number of items"), or None when it reads like markup or a signature."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not re.fullmatch(r"[A-Z][a-z]+(?: [A-Za-z][a-z'-]*){2,8}\.?", line):
        return None
    return (line[0].lower() + line[1:]).rstrip(".")


def example_queries(item: LoadedIndex, n: int = 4, candidates: int = 200) -> list:
    """Queries for the examples row: the other side of a few indexed pairs (docstrings of indexed
    code, code of indexed docstrings, captions of indexed images, images of indexed captions),
    spread over the index. Text queries for code are docstring lines that read like a query
    (``natural_query``); text queries that find their own item in the first three (dense) come first."""
    query_field = EXAMPLE_FIELD.get(item.pair)
    count = item.index.manifest.count
    spread = candidates if item.pair[0] == "text" else n
    ids = sorted({int(i * count / spread) for i in range(spread)})
    rows = item.index.store.get(ids)
    values = [(i, rows[i][1].get(query_field) if query_field else None) for i in ids if i in rows]
    if item.pair[0] == "image":
        images = [thumbnail(v) for _, v in values if isinstance(v, str)]
        return [im for im in images if im is not None][:n]
    if item.pair[0] == "code":
        return [v[:2000] for _, v in values if isinstance(v, str) and v.strip()][:n]
    if item.pair[1] == "code":
        found = [(i, q) for i, v in values if isinstance(v, str) and (q := natural_query(v))]
    else:  # captions
        found = [(i, v.strip().splitlines()[0][:200]) for i, v in values if isinstance(v, str) and v.strip()]
    found = list({q: (i, q) for i, q in found}.values())[: 3 * n]  # distinct queries, a few to try
    if not found:
        return [v.strip().splitlines()[0][:200] for _, v in values if isinstance(v, str) and v.strip()][:n]
    with item.lock:
        hits = item.index.search([q for _, q in found], k=3)
    good = [q for (i, q), h in zip(found, hits) if any(x.id == i for x in h)]
    return (good + [q for _, q in found if q not in good])[:n]


def build_app(indexes: dict[str, LoadedIndex]):
    """The Blocks app: one tab per query→result pair that the loaded indexes serve."""
    import gradio as gr

    def guarded(fn: Callable) -> Callable:
        @functools.wraps(fn)  # the API's parameters keep fn's names, types and defaults
        def call(*args):
            try:
                return fn(*args)
            except SearchError as e:
                raise gr.Error(str(e), print_exception=False) from None  # the user's mistake, not the app's
            except Exception as e:  # the user sees one line; the log keeps the trace
                log.exception("search failed")
                raise gr.Error(f"search failed: {type(e).__name__}: {str(e)[:300]}") from None

        return call

    with gr.Blocks(title="mmssl search", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# mmssl cross-modal search")
        for pair, spec in TABS.items():
            served = [item for item in indexes.values() if item.pair == pair]
            if not served:
                continue
            with gr.Tab(spec.label):
                _tab(gr, indexes, spec, served, guarded)
    return app


def _tab(gr, indexes, spec: TabSpec, served: list[LoadedIndex], guarded) -> None:
    first = served[0]
    notice = gr.Markdown(notice_of(first))
    if spec.query_kind == "code":
        query = gr.Code(language="python", label="query (code)", lines=8, interactive=True)
    elif spec.query_kind == "image":
        # a path, not decoded: the search opens it itself, with caps (demo.uploads)
        query = gr.Image(
            type="filepath", image_mode=None, label="query image", sources=["upload", "clipboard"], height=224
        )
    else:
        query = gr.Textbox(
            label="query", placeholder=spec.placeholder, lines=1, max_length=MAX_QUERY_CHARS["text"]
        )  # Enter searches
    with gr.Row():
        picker = gr.Dropdown(
            [i.name for i in served], value=first.name, label="index", visible=len(served) > 1, min_width=160
        )
        mode = gr.Radio(first.modes, value=first.default_mode, label="mode", min_width=160)
        within = gr.Dropdown(
            [("everything", EVERYTHING), *first.filters],
            value=EVERYTHING,
            label="search within",
            visible=bool(first.filters),
            filterable=True,
            min_width=160,
        )
        k = gr.Number(FIRST_K, label="results", precision=0, minimum=1, maximum=MAX_K, step=MORE_K, min_width=100)
    button = gr.Button("Search", variant="primary")
    examples = example_queries(first)
    if examples:
        gr.Examples([[e] for e in examples], inputs=[query], label="example queries")
    with gr.Accordion("about this index", open=False):
        about_md = gr.Markdown(about(first))
    result_json = gr.JSON(visible=False)
    status = gr.Markdown(elem_classes="mmssl-status")
    results = gr.HTML()
    more = gr.Button(f"{MORE_K} more results", visible=False, size="sm")

    def search(query, index: str, k: int, mode: str, within: str = EVERYTHING) -> dict:
        return run_search(indexes, spec, query, index, k, mode, within)

    search.__name__ = spec.api_name
    text_query = spec.query_kind == "text"

    def render(result, q, kk):
        hits = (result or {}).get("hits") or []
        took = (result or {}).get("took_ms")
        line = f"{len(hits)} result{'s' * (len(hits) != 1)}" if hits else "no results"
        line += f" in {took:,.0f} ms" if took is not None else ""
        note = (result or {}).get("note")
        if note:
            line += f"  \n⚠️ {note}"
        html = render_hits(hits, spec.result_kind, q if text_query else None, pictured=spec.query_kind == "image")
        full = len(hits) >= int(kk or 0) and int(kk or 0) < MAX_K  # as many as asked: there may be more
        return line, html, gr.Button(visible=full)

    def switch(name):
        item = indexes[name]
        menu = [("everything", EVERYTHING), *item.filters]
        return (
            gr.Radio(choices=item.modes, value=item.default_mode),
            gr.Dropdown(choices=menu, value=EVERYTHING, visible=bool(item.filters)),
            about(item),
            notice_of(item),
        )

    inputs = [query, picker, k, mode, within]
    # The button is the named API endpoint; Enter in a text box and "more results" run the same
    # search, unnamed. An image query is passed unprocessed (Gradio's FileData, its path checked by
    # Gradio to be an upload): gr.Image's own preprocessing opens the file and reports Pillow's
    # errors as a developer's message naming server paths; run_search opens it with caps and says
    # what is wrong.
    preprocess = spec.query_kind != "image"
    triggers = [(button.click, spec.api_name, "public")]
    if text_query:
        triggers.append((query.submit, None, "private"))
    for trigger, api_name, visibility in triggers:
        event = trigger(
            guarded(search), inputs, result_json, api_name=api_name, api_visibility=visibility, preprocess=preprocess
        )
        event.then(render, [result_json, query, k], [status, results, more], api_visibility="private")
    more.click(lambda kk: min(int(kk or FIRST_K) + MORE_K, MAX_K), k, k, api_visibility="private").then(
        guarded(search), inputs, result_json, api_visibility="private", preprocess=preprocess
    ).then(render, [result_json, query, k], [status, results, more], api_visibility="private")
    picker.change(switch, picker, [mode, within, about_md, notice], api_visibility="private")


@contextmanager
def serving(indexes: dict[str, LoadedIndex], host: str, port: int | None, **launch_kwargs) -> Iterator[Any]:
    """The app running in the background with the demo's settings (queue, upload cap), Gradio's
    files in a folder of this run's own (``private_temp_dir``); closed, and the folder removed, on exit."""
    pin_mmap_threshold()  # large request buffers go back to the system when freed
    with private_temp_dir():
        app = build_app(indexes)
        app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
        app.launch(
            server_name=host,
            server_port=port,
            show_error=True,
            max_file_size=MAX_UPLOAD_BYTES,
            css=css(),
            prevent_thread_lock=True,
            **launch_kwargs,
        )
        try:
            yield app
        finally:
            app.close()


def launch(indexes: dict[str, LoadedIndex], host: str, port: int) -> None:
    """Serve the app until Ctrl-C or SIGTERM (``serving``)."""
    with serving(indexes, host, port) as app:
        app.block_thread()
