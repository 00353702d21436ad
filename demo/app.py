"""The Gradio cross-modal search app over one or more index directories.

    mmssl demo --index runs/demo/code-index --index runs/demo/doc-index [--host 127.0.0.1 --port 7860]

Each index directory says what it holds (``modality``) and what queries it (``query_modality``);
the app groups the indexes by that pair and gives each pair a tab (``demo.search.TABS``: text→code,
code→text, text→image, image→text; ``demo.tab``). A tab has an index picker (when more than one
index serves it), the query input (a text box, a code box, or an image to upload or pick from the
examples), the number of results, the search mode (dense, and lexical / hybrid when the index has
a BM25 side and the query is text; it starts on the index's own default, chosen on validation
queries), example queries taken from the index itself, a filter by where the items come from
(standard library, installed packages, one package: ``demo.search.filters_of``) and an "about this
index" panel from its manifest (``demo.panels``: what the collection holds and how much of it is
searchable, its licences, the model, how the default mode was chosen). A tab whose model stopped
before its steps says so above the query; a tab whose indexes are still being built says that
instead (``building``: ``make demo`` opens the app before its image indexes are done). Enter
searches. Results (``demo.results``) say how many, how long the search took, and when
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from demo.results import css
from demo.search import TABS, LoadedIndex
from demo.tab import build_tab
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


def build_app(indexes: dict[str, LoadedIndex], building: dict[tuple[str, str], str] | None = None):
    """The Blocks app: one tab per query→result pair that the loaded indexes serve, and one saying
    so for each pair in ``building`` (pair → what is being built) that they do not serve yet."""
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
            if served:
                with gr.Tab(spec.label):
                    build_tab(gr, indexes, spec, served, guarded)
            elif building and pair in building:
                with gr.Tab(spec.label + " (building)"):
                    gr.Markdown(f"⏳ {building[pair]}")
    return app


@contextmanager
def serving(
    indexes: dict[str, LoadedIndex], host: str, port: int | None, building=None, **launch_kwargs
) -> Iterator[Any]:
    """The app running in the background with the demo's settings (queue, upload cap), Gradio's
    files in a folder of this run's own (``private_temp_dir``); closed, and the folder removed, on
    exit. ``building``: tabs still being built (``build_app``)."""
    if any(item.pair[0] == "image" for item in indexes.values()):
        # uploaded images' buffers go back to the system when freed. Only an app that takes uploads
        # pins it: with it pinned every large tensor is a fresh mapping, and the image tower that
        # `make demo` trains while its code tabs serve ran at 170 samples/s against 420 unpinned
        pin_mmap_threshold()
    with private_temp_dir():
        app = build_app(indexes, building)
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
