"""Ingestion: from an uploaded file (or the built-in demo shop) to a registered dataset.

Import from the module that does the job; this package re-exports nothing, so importing
one step (say, the demo generator) does not import the others.

    read           bytes or a path -> DataFrame: size limit, gzip, Parquet, sniffed text
    jsonl          JSON Lines logs: pyarrow's JSON reader, errors naming line and field
    stream         big files read block by block (only the mapped columns)
    limits         the memory budget, and the sentence for a log over it
    detect         which column holds the user, item, timestamp, rating and event
    parse          the mapped columns, block by block: ratings, timestamps, event types
    ids            id columns: text checks, integer codes, one code space per file
    catalog        a product catalog, and joining it to the items of a log
    clean          time order, dedupe, k-core, dense ids and the split, vectorised
    build          `load_interactions` and `build_dataset`: read -> parse -> clean
    options        ColumnMapping, CleanOptions, SplitOptions
    messages       the pieces of a one-sentence `DataError`: display names, clipped values, rows
    demo           the deterministic demo shop: its config and `generate_demo`
    demo_catalog   its products, built from the data in demo_catalog.toml
    demo_shoppers  its shoppers' sessions, simulated over that catalog
    shapes         generated logs of other shapes (long, repeat-free; repeat-heavy, long-tail)
    registry       datasets on disk (Parquet) and in the store; a small in-memory cache
"""
