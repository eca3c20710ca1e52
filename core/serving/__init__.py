"""Serving: what a trained student becomes when it is handed to a serving team.

The modules, in the order a handoff uses them:

- :mod:`core.serving.export`: ONNX export of :meth:`Recommender.recommend` (top-K inside
  the graph), int8 quantization, the item map, and onnxruntime sessions and evaluation;
- :mod:`core.serving.parity`: the same requests through PyTorch and onnxruntime, compared;
- :mod:`core.serving.latency`: latency percentiles and throughput of full requests;
- :mod:`core.serving.prepare`: export, check and time one run, writing every number to
  the store;
- :mod:`core.serving.facts`: the numbers of one prepared run, read back from the store;
- :mod:`core.serving.gates`: pass/fail checks of those numbers against editable thresholds;
- :mod:`core.serving.card`: the model card (JSON data and a Jinja2 Markdown template) and
  the Handoff page's tables;
- :mod:`core.serving.bundle`: the deterministic zip a serving team downloads.

Nothing here imports Streamlit; the Handoff page only arranges what these modules return.
"""
