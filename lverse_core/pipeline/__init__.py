"""The notebooks' glue: the papermill runner and one module per notebook that keeps its cells short (tables,
figures, sentences).

The runner, one job per module: ``cli`` (``python -m lverse_core ...``), ``execute`` (the papermill loop),
``processes`` (kernels' memory and ending them), ``notebook_html`` (offline pages), ``manifest`` (run records),
``headlines`` (the headline numbers the notebooks declare), ``index_page`` (index.html) and ``results_page``
(RESULTS.md and README's results block). The glue: ``data_report`` (00), ``biart_run`` (02), ``recon_eval`` (01 and
03, Table 1), ``eval_tables``, ``eval_run`` and ``t2i_eval`` (04-05, Tables 2-3), and
``figures`` (drawn by more than one notebook). Only this layer may know about notebooks; it imports every other
layer and nothing imports it.
"""
