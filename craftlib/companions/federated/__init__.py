"""Notebook 08's companion: federated face recognition on LFW sites (``federation``: FedAvg,
AdaFedFR-style shared negatives, server- vs client-side CRAFT, the retrieval attack), what may cross
a site's boundary and how the server judges a reply (``boundary``), the seed study (``study``), the
rounds explorer (``widgets``), the command line (``cli``) and Flower (``flower_app``,
``flower_deploy``, ``flower_keys``; optional extra)."""
