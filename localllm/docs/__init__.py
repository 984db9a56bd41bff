"""Documents: collections of a user's files indexed for retrieval (RAG).

``store`` is the SQLite database of one collection (sqlite-vec vectors, FTS5 for BM25, a schema
version), ``readers`` turns a file into text, ``chunker`` cuts text into chunks that keep headings
and code blocks whole, ``walk`` finds the files of a folder (``.gitignore``, symlink loops,
binaries), and ``index`` updates a collection and searches it. Nothing here loads a model: the
embedding function is passed in by ``localllm.app.documents``.
"""
