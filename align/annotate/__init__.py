"""Human preference labels through Argilla: push candidate pairs, annotators label them, pull them back.

    align annotate serve                      a local Argilla (SQLite + Redis, no Elasticsearch)
    align annotate push RUN dataset=NAME      candidate pairs -> an Argilla dataset (idempotent)
    align annotate status dataset=NAME        progress per annotator, inter-annotator agreement
    align annotate pull dataset=NAME          submitted labels -> a preference run (journaled)
    align annotate stop                       stop the local server

Modules: `connection` (the argilla SDK client: URL + API key, error and retry policy), `template`
(the dataset's settings from the YAML templates in templates/, guidelines in guidelines/), `votes`
(majority, agreement, A/B swap: pure functions), `journal` (the local, append-only history of every
pulled response, per server and dataset id), `local` (the local server's files), `server/` (the
search engine and launcher that run inside the server's own virtual environment).
Nothing here imports the training stack, and nothing outside this package imports from it.
"""
