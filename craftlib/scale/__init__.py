"""Beyond the laptop: DDP training with synchronised re-activation (``distributed``), face folders
and InsightFace ``.bin`` verification sets (``facefolders``, ``facebin``) and their command line
(``cli``). The iResNet backbones live in the core (``craftlib.iresnet``): checkpoints load them."""
