"""Evaluation: the attribute judge of the embedded data set, also the kit's FID feature space (``judge``); FID and
FID under blur (``fid``, Tables 1 and 3); caption metrics through pycocoevalcap (``metrics``, Table 2); and the
human-evaluation protocol (``human_eval`` and its HTML form, ``human_eval_form``; Figure 7).
"""
