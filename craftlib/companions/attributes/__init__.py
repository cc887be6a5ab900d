"""Notebook 07's companion: LFW's attribute and gender labels (``labels``), linear probes of each
stage (``linear_probes``; not the fixed face batch that ``data.probe_batch`` calls a probe),
attribute heads that branch off the trunk (``branching``), the study (``study``), its heat map
(``widgets``) and command line (``cli``)."""
