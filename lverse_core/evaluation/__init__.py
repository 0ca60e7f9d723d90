"""Evaluation: every confidence interval (``statistics``); the attribute judge of the embedded data set, also the
kit's FID feature space (``judge``), and its verdicts summed up (``verdicts``); FID and FID under blur (``fid``,
Tables 1 and 3); reconstruction measures (``reconstruction``, Table 1); BiART's held-out NLL and conditioning gap
(``likelihood``); caption metrics through pycocoevalcap (``metrics``, Table 2); the human-evaluation protocol
(``human_eval`` and its HTML form, ``human_eval_form``; Figure 7); and the claims' verdicts, scorecard and
experiment (``claims``, ``scorecard``, ``claims_experiment`` with its arms ``claims_arms`` and measures
``claims_measures``; notebook 07).
"""
