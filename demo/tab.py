"""One tab of the search app: its query input, index picker, mode, filter and number of results,
example queries, the about panel, and the results, with the events that search (the tab's named
API endpoint, Enter in a text box, "more results") and render (``demo.results``)."""

from __future__ import annotations

from demo.panels import about, example_queries, notice_of
from demo.results import render_hits
from demo.search import EVERYTHING, FIRST_K, MAX_K, MAX_QUERY_CHARS, MORE_K, LoadedIndex, TabSpec, run_search


def build_tab(gr, indexes: dict[str, LoadedIndex], spec: TabSpec, served: list[LoadedIndex], guarded) -> None:
    """The components and events of one tab (inside its ``gr.Tab``), over the indexes it serves."""
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
            first.filter_menu,
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
        return (
            gr.Radio(choices=item.modes, value=item.default_mode),
            gr.Dropdown(choices=item.filter_menu, value=EVERYTHING, visible=bool(item.filters)),
            about(item),
            notice_of(item),
        )

    inputs = [query, picker, k, mode, within]
    # The button is the named API endpoint; Enter in a text box and "more results" run the same
    # search, unnamed. Every input is passed unprocessed and run_search checks them all: Gradio's own
    # checks of the components' values (a choice not in a menu, k past its maximum) answer an API
    # caller but print a traceback in the server's console for each bad request, and gr.Image's
    # preprocessing opens the file itself and reports Pillow's errors as a developer's message
    # naming server paths (an image query arrives as Gradio's FileData, its path checked by Gradio
    # to be an upload; run_search opens it with caps and says what is wrong).
    triggers = [(button.click, spec.api_name, "public")]
    if text_query:
        triggers.append((query.submit, None, "private"))
    for trigger, api_name, visibility in triggers:
        event = trigger(
            guarded(search), inputs, result_json, api_name=api_name, api_visibility=visibility, preprocess=False
        )
        event.then(render, [result_json, query, k], [status, results, more], api_visibility="private")
    more.click(lambda kk: min(int(kk or FIRST_K) + MORE_K, MAX_K), k, k, api_visibility="private").then(
        guarded(search), inputs, result_json, api_visibility="private", preprocess=False
    ).then(render, [result_json, query, k], [status, results, more], api_visibility="private")
    picker.change(switch, picker, [mode, within, about_md, notice], api_visibility="private")
