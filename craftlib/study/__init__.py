"""The seed study: many seeds, paired arms, honest statistics. Imports only the core.

Reading order: ``experiments`` (one record per finished seed and arm), ``results`` (records -> one
summary: intervals, Holm, renderers), ``figures`` and ``dashboard`` (the summary drawn, and pooled
across laptops), ``survival`` and ``hazard`` (do renewed filters stay alive, fairly compared),
``dose`` and ``dose_report`` (the dose-response study across decay budgets), ``ablation`` (are
silent channels useless), ``room`` and ``runs`` (the notebooks' side: one run per arm and seed,
trained once and reused), ``runfolder`` (a CLI run's folder, checked and resumable), ``reference``
(the committed numbers the notebooks' checkpoints quote).
"""
