"""Companion studies, each in its own wing: it imports the core and ``craftlib.study``, never
another companion.

``sparsity`` (notebook 06: a CReLU stem and Top-K sparsity beside CRAFT), ``attributes`` (notebook
07: what the trunk's stages know about face attributes, and CRAFT's footprint on them),
``federated`` (notebook 08: CRAFT when the faces stay on their sites).
"""
