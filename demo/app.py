"""The Gradio cross-modal search app over one or more index directories.

    mmssl demo --index runs/demo/code-index --index runs/demo/doc-index [--host 127.0.0.1 --port 7860]

Each index directory says what it holds (``modality``) and what queries it (``query_modality``);
the app groups the indexes by that pair and gives each pair a tab (``demo.search.TABS``: text→code,
code→text, text→image, image→text). A tab has an index picker (when more than one index serves
it), the query input (a text box, a code box, or an image to upload or pick from the examples), a
``k`` slider, the search mode (dense, and lexical / hybrid when the index has a BM25 side and the
query is text; it starts on the index's own default, chosen on validation queries), example
queries taken from the index itself, and an "about this index" panel from its manifest (what the
collection holds, its licences, the model, how the default mode was chosen). A tab whose model
stopped before its steps says so above the query. Results show rank, score and payload: code in
``gr.Code`` with syntax highlighting and where it comes from (repository, path, function, url);
images in a gallery captioned with their names and scores; captions found by image beside the
thumbnail of the image they belong to.

Every search is a named API endpoint (``/text_to_code``, ``/code_to_text``, ``/text_to_image``,
``/image_to_text``) returning the hits as JSON (rank, id, score, text, payload; the payload's
``path`` is named ``file_path`` there, see ``api_hit``), callable with ``gradio_client``:

    from gradio_client import Client
    hits = Client("http://127.0.0.1:7860/").predict("read a csv file", "code-index", 5, "dense",
                                                      api_name="/text_to_code")

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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from demo.search import EXAMPLE_FIELD, MAX_K, MAX_QUERY_CHARS, TABS, LoadedIndex, TabSpec, run_search
from demo.uploads import (
    DELETE_CACHE,
    MAX_UPLOAD_BYTES,
    SearchError,
    pin_mmap_threshold,
    private_temp_dir,
)
from mmssl.console import get_logger

log = get_logger("demo")

THUMB = 256  # result and example images are sent at most this many pixels a side
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
    lines = [
        f"**{item.name}**: {len(item.index):,} {m.modality or 'item'} items, searched with {m.query_modality} queries",
    ]
    card = m.collection
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


def thumbnail(path: str):
    """The image at ``path`` (an indexed item's), RGB and at most THUMB pixels a side; None if unreadable."""
    from mmssl.data.image_text import BadImage, open_image

    try:
        image = open_image(path)
    except BadImage:
        return None
    image.thumbnail((THUMB, THUMB))
    return image


def example_queries(item: LoadedIndex, n: int = 4) -> list:
    """Queries for the examples row: the other side of a few indexed pairs (docstrings of indexed
    code, code of indexed docstrings, captions of indexed images, images of indexed captions),
    spread over the index."""
    query_field = EXAMPLE_FIELD.get(item.pair)
    count = item.index.manifest.count
    ids = [int(i * count / n) for i in range(n)]
    rows = item.index.store.get(ids)
    out = []
    for i in ids:
        if i in rows:
            value = rows[i][1].get(query_field) if query_field else None
            if item.pair[0] == "image":
                image = thumbnail(value) if isinstance(value, str) else None
                if image is not None:
                    out.append(image)
            elif isinstance(value, str) and value.strip():
                out.append(value.strip().splitlines()[0][:200] if item.pair[0] == "text" else value[:2000])
    return out


def _header(hit: dict, result_kind: str) -> str:
    p = hit["payload"]
    fields = [p.get(key) for key in ("repo", "file_path", "func_name")]
    where = " · ".join(f"`{v}`" for v in fields if isinstance(v, str) and v)
    line = f"**{hit['rank']}.** score {hit['score']:.4f}" + (f" — {where}" if where else "")
    if isinstance(p.get("url"), str):
        line += f"  \n<small>{_escape(p['url'])}</small>"
    return line


def shown_name(hit: dict) -> str:
    """What a result is called on the page: its payload's ``label`` (an emoji's CLDR name, an icon's
    caption), else its text."""
    label = hit["payload"].get("label")
    return label if isinstance(label, str) and label else hit["text"]


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_app(indexes: dict[str, LoadedIndex]):
    """The Blocks app: one tab per query→result pair that the loaded indexes serve."""
    import gradio as gr

    def guarded(fn: Callable) -> Callable:
        def call(*args):
            try:
                return fn(*args)
            except SearchError as e:
                raise gr.Error(str(e), print_exception=False) from None  # the user's mistake, not the app's
            except Exception as e:  # the user sees one line; the log keeps the trace
                log.exception("search failed")
                raise gr.Error(f"search failed: {type(e).__name__}: {str(e)[:300]}") from None

        call.__name__ = getattr(fn, "__name__", "search")
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
    with gr.Row():
        picker = gr.Dropdown(
            [i.name for i in served], value=first.name, label="index", visible=len(served) > 1, scale=2
        )
        k = gr.Slider(1, MAX_K, value=5, step=1, label="results (k)", scale=2)
        mode = gr.Radio(first.modes, value=first.default_mode, label="mode", scale=2)
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
    button = gr.Button("Search", variant="primary")
    examples = example_queries(first)
    if examples:
        gr.Examples([[e] for e in examples], inputs=[query], label="example queries")
    with gr.Accordion("about this index", open=False):
        about_md = gr.Markdown(about(first))
    hits_json = gr.JSON(visible=False)
    status = gr.Markdown()
    slots = []
    gallery = None
    if spec.result_kind == "image":
        gallery = gr.Gallery(label="results", columns=5, height="auto", object_fit="contain", preview=False)
    pictured = spec.query_kind == "image"  # image → text: each caption beside its own image
    for _ in range(MAX_K if gallery is None else 0):
        with gr.Column(visible=False) as col:
            head = gr.Markdown()
            with gr.Row(equal_height=True):
                slot = [col, head]
                if pictured:
                    slot.append(gr.Image(show_label=False, interactive=False, height=72, width=72, scale=0))
                if spec.result_kind == "code":
                    slot.append(gr.Code(language="python", interactive=False, lines=1, max_lines=30))
                else:
                    slot.append(gr.Textbox(show_label=False, interactive=False, lines=1, max_lines=12, scale=4))
        slots.append(slot)

    def search(q, name, kk, m):
        return run_search(indexes, spec, q, name, kk, m)

    search.__name__ = spec.api_name

    def render(hits):
        hits = hits or []
        updates = [f"{len(hits)} result{'s' * (len(hits) != 1)}" if hits else "no results"]
        if gallery is not None:
            shown = [(thumbnail(h["payload"].get("file_path", "")), h) for h in hits]
            captions = [(im, f"{h['rank']}. {shown_name(h)} ({h['score']:.3f})") for im, h in shown if im is not None]
            return updates + [captions]
        for i in range(MAX_K):
            if i < len(hits):
                h = hits[i]
                picture = [thumbnail(h["payload"].get("file_path", ""))] if pictured else []
                updates += [gr.Column(visible=True), _header(h, spec.result_kind), *picture, h["text"]]
            else:
                updates += [gr.Column(visible=False), "", *([None] if pictured else []), ""]
        return updates

    def switch(name):
        item = indexes[name]
        return gr.Radio(choices=item.modes, value=item.default_mode), about(item), notice_of(item)

    outputs = [status] + ([gallery] if gallery is not None else [c for slot in slots for c in slot])
    inputs = [query, picker, k, mode]
    # the button is the named API endpoint; Enter in a text box runs the same search, unnamed
    triggers = [(button.click, spec.api_name, "public")]
    if spec.query_kind == "text":
        triggers.append((query.submit, None, "private"))
    # An image query is passed unprocessed (Gradio's FileData, its path checked by Gradio to be an
    # upload): gr.Image's own preprocessing opens the file and reports Pillow's errors as a
    # developer's message naming server paths; run_search opens it with caps and says what is wrong.
    preprocess = spec.query_kind != "image"
    for trigger, api_name, visibility in triggers:
        event = trigger(
            guarded(search), inputs, hits_json, api_name=api_name, api_visibility=visibility, preprocess=preprocess
        )
        event.then(render, hits_json, outputs, api_visibility="private")
    picker.change(switch, picker, [mode, about_md, notice], api_visibility="private")


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
