"""craftlib: CRAFT (Contextual Re-Activation of Filters) for face-recognition training, for
teaching.

Modules, one concept each: ``data`` (LFW), ``models`` (the face CNN), ``losses`` (margin heads),
``training`` (the loop), ``verification`` (LFW protocol), ``activity`` (which filters are inactive),
``reactivation`` (bringing them back), ``experiments`` (seed comparisons), ``viz`` and ``widgets``.
"""

__version__ = "0.2.0"
