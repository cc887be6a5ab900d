"""Notebook 06's companion: CReLU's pairing measure (``pairing``), the face shape-vs-texture probe
(``shapebias``), the comparison of a CReLU stem and Top-K sparsity against CRAFT (``study``), its
explorers (``widgets``) and command line (``cli``)."""
