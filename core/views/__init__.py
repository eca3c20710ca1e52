"""View-models of the pages: what the Data, Train, Runs and Compare pages show, as plain data.

Pages call these modules and only arrange widgets; nothing here imports Streamlit, so every
table, chart and form rule is testable on its own.

- :mod:`core.views.runs`: the Runs page (run table, filters, metrics, artifacts) and the
  list of finished teachers every page picks from;
- :mod:`core.views.compare`: the Compare page's side-by-side table, config differences,
  Pareto and "% kept" frames, and the on-demand latency measurement;
- :mod:`core.views.recommendations`: sample recommendations for one user, user search and
  history;
- :mod:`core.views.whatif`: a shopping session built by hand, and every sequence model's
  next-item list for it;
- :mod:`core.views.forms`: widget values -> validated configs and run plans;
- :mod:`core.views.charts`: every Altair chart, built from the tidy frames above;
- :mod:`core.views.text`: text in and out (Markdown escaping, CSV/Markdown exports, the run
  title, durations, ids from a URL).
"""
