"""The notebooks' glue: the papermill runner (``runner``, ``python -m lverse_core run``) and one module per notebook
that keeps its cells short (tables, figures, sentences): ``data_report`` (00), ``biart_run`` (02), ``recon_eval``
(01 and 03, Table 1), ``eval_tables``, ``eval_run`` and ``t2i_eval`` (04-05, Tables 2-3), ``claims_run`` (07), and
``figures`` (drawn by more than one notebook). Only this layer may know about notebooks; it imports every
other layer and nothing imports it.
"""
