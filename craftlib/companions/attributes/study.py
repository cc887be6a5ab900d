"""The companion attribute study: probes per depth, branching heads, CRAFT's footprint, per-group
verification.

One small JSON record per trained model and measurement, in ``<out>/records/``:

* ``probe-<arm>-s<seed>.json`` — every probe (balanced accuracy, 95% interval over test identities,
  C, inner-CV score) and DevTest verification overall and per gender / age group. The reference
  model's probes (``StudySettings.reference_model``, standard seed 0) cross-validate C; every other
  trained model reuses those C values, so that both arms are read by probes of the same capacity;
* ``branching-<arm>-s<seed>.json`` — joint fine-tuning of attribute heads branching at the
  embedding, at each attribute's best depth, and the identity-only control; heads' balanced accuracy
  on unseen people, DevTest accuracy after each, and the MACs of one trunk vs separate networks.

A record already there is skipped (the study resumes), and every record carries the settings'
fingerprint, so that records made with other settings are never pooled. ``summarize`` turns a folder
into tables with the project's paired statistics (``results.paired``, ``results.holm``) and
formatter (``results.fmt``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

from craftlib import __version__
from craftlib.checkpoints import load_model
from craftlib.data import FaceSet, PairSet
from craftlib.models import FaceCNN
from craftlib.paths import atomic_write
from craftlib.recipes import FAST
from craftlib.runtime import seed_everything
from craftlib.study.results import fmt, fmt_ci, holm, paired
from craftlib.verification import cosine_scores, embed, evaluate_scores

from .branching import (
    STAGES,
    BranchingNet,
    FinetuneConfig,
    finetune,
    macs_table,
    margin_head_from,
    predict,
)
from .labels import (
    ATTRIBUTES,
    PROBE_ATTRIBUTES,
    UNKNOWN,
    AttributeLabels,
    ProbeSet,
    attribute_matrix,
)
from .linear_probes import CS, N_BOOT, POOL, balanced_accuracy_ci, run_probes

REFERENCE_ARM = "untrained"
"""A randomly initialised, never trained network: what the architecture alone makes decodable."""
ARM_NAMES = {"none": "standard", "contextual": "CRAFT", REFERENCE_ARM: "untrained (random init)"}
GROUPS = {
    "gender": ("gender", {1: "men", 0: "women"}),
    "age": ("Senior", {1: "senior", 0: "not senior"}),
}
"""Per-group verification: label column and group names (gender from the manually verified
lists)."""


@dataclass(frozen=True)
class StudySettings:
    """Everything that fixes the numbers of a record (and so decides whether records may be
    pooled)."""

    size: int = 40
    attributes: tuple[str, ...] = tuple(a.name for a in PROBE_ATTRIBUTES)
    max_per_identity: int = 4
    max_identities: int | None = None  # people in the probe set (None: all who qualify)
    train_identities: int | None = (
        None  # the models' training set (None: the whole DevTest-disjoint set)
    )
    test_fraction: float = 0.4
    split_seed: int = 0
    pool: int = POOL
    Cs: tuple[float, ...] = CS
    n_boot: int = N_BOOT
    finetune: FinetuneConfig = FinetuneConfig()
    reference_model: str = "none-s0"
    """Its probes cross-validate C; every other trained model's probes reuse that C per attribute x
    stage (the same probe capacity for both arms, ~5x less CPU), and the branching heads of every
    arm branch where its inner CV said. The untrained network cross-validates its own."""

    def fingerprint(self) -> dict:
        return json.loads(json.dumps({**asdict(self), "code": __version__}))

    def attribute_objects(self):
        return tuple(ATTRIBUTES[a] for a in self.attributes)


FAST_SETTINGS = StudySettings(
    size=FAST.train.model.input_size,
    max_identities=600,
    train_identities=FAST.max_identities,
    n_boot=200,
    Cs=(1e-2, 1.0),
    finetune=FinetuneConfig(epochs=1, max_steps=6),
)
"""CI budget: every code path in seconds; the numbers mean nothing."""


# --------------------------------------------------------------------------------------------
# per-group verification


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (``None`` when ``n`` is 0)."""
    if n == 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _rate(k: int, n: int) -> dict:
    return {"k": int(k), "n": int(n), "rate": (k / n) if n else None, "ci95": wilson(k, n)}


def group_verification(
    scores: np.ndarray, pairs: PairSet, image_groups: np.ndarray, names: dict[int, str]
) -> dict:
    """Verification measured per group, with **one** threshold for everyone (as a deployed system
    has).

    Each pair is decided with the threshold the 10-fold protocol chose for its fold on the other
    nine folds (all pairs). A pair belongs to group g when *both* faces are labelled g. Pairs whose
    faces carry different labels ("mixed") are reported apart: they are impostor pairs by
    construction (up to label noise), so only their false-match rate means something; pairs with an
    unlabelled face are counted and left out. Per group: accuracy, false non-match rate (genuine
    pairs rejected) and false match rate (impostors accepted), each with a Wilson interval over
    pairs.
    """
    report = evaluate_scores(scores, pairs.same, pairs.folds)
    folds = np.unique(pairs.folds)
    threshold = np.asarray(report["thresholds"])[np.searchsorted(folds, pairs.folds)]
    accept = scores > threshold
    correct = accept == pairs.same
    gl, gr = image_groups[pairs.left], image_groups[pairs.right]
    out = {"accuracy": report["accuracy"], "groups": {}}
    labelled = (gl != UNKNOWN) & (gr != UNKNOWN)
    for value, name in names.items():
        m = labelled & (gl == value) & (gr == value)
        gen, imp = m & pairs.same, m & ~pairs.same
        out["groups"][name] = {
            "pairs": int(m.sum()),
            "genuine": int(gen.sum()),
            "impostor": int(imp.sum()),
            "accuracy": _rate(correct[m].sum(), m.sum()),
            "fnmr": _rate((~accept[gen]).sum(), gen.sum()),
            "fmr": _rate(accept[imp].sum(), imp.sum()),
        }
    mixed = labelled & (gl != gr)
    out["mixed"] = {
        "pairs": int(mixed.sum()),
        "genuine": int((mixed & pairs.same).sum()),
        "fmr": _rate(accept[mixed & ~pairs.same].sum(), (mixed & ~pairs.same).sum()),
    }
    out["unlabelled_pairs"] = int((~labelled).sum())
    return out


def pair_image_groups(pairs: PairSet, labels: AttributeLabels, column: str) -> np.ndarray:
    """The label (1 / 0 / ``UNKNOWN``) of one column for every image the pairs use."""
    return labels.lookup(pairs.files, [column])[:, 0]


# --------------------------------------------------------------------------------------------
# records


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def untrained_model(settings: StudySettings, seed: int) -> FaceCNN:
    """The reference: the workshop architecture at its random initialisation for ``seed``."""
    from craftlib.models import ModelConfig

    seed_everything(seed)
    return FaceCNN(ModelConfig(input_size=settings.size)).eval()


def probe_record(
    model: FaceCNN,
    probe_set: ProbeSet,
    pairs: PairSet,
    labels: AttributeLabels,
    settings: StudySettings,
    log=None,
    C: np.ndarray | None = None,
) -> dict:
    """Every probe of one model (``C`` fixed per cell, or cross-validated), and DevTest verification
    overall and per group."""
    start = time.perf_counter()
    results = run_probes(
        model,
        probe_set,
        STAGES,
        settings.pool,
        settings.Cs,
        settings.n_boot,
        settings.split_seed,
        progress=None
        if log is None
        else (
            lambda a, s, p: log(
                f"    {a:<11} {s:<9} {'n/a' if p is None else fmt('accuracy', p.balanced_accuracy)}"
            )
        ),
        C=C,
    )
    scores = cosine_scores(embed(model, pairs.images), pairs)
    groups = {
        name: group_verification(scores, pairs, pair_image_groups(pairs, labels, col), names)
        for name, (col, names) in GROUPS.items()
    }
    return {
        "probes": results.to_dict(),
        "verification": groups,
        "seconds": time.perf_counter() - start,
    }


def heads_report(net: BranchingNet, probe_set: ProbeSet, settings: StudySettings) -> dict:
    """Each head's balanced accuracy on the probe set's test people (95% bootstrap interval over
    people)."""
    logits = predict(net, probe_set.images)
    out = {}
    for j, attr in enumerate(probe_set.attribute_names):
        if attr not in logits:
            continue
        te = probe_set.test_idx[probe_set.y[probe_set.test_idx, j] != UNKNOWN]
        ba, ci = balanced_accuracy_ci(
            probe_set.y[te, j] == 1,
            logits[attr][te] > 0,
            probe_set.identities[te],
            settings.n_boot,
            settings.split_seed,
        )
        out[attr] = {"stage": net.branches[attr], "balanced_accuracy": ba, "ci95": list(ci)}
    return out


def branching_record(
    checkpoint: str | Path,
    data: FaceSet,
    labels: AttributeLabels,
    probe_set: ProbeSet,
    pairs: PairSet,
    best: dict[str, str],
    settings: StudySettings,
    log=None,
) -> dict:
    """Joint fine-tuning from one trained checkpoint, three ways, each from the same starting
    weights:

    ``control`` (identity loss only: what the extra training alone does), ``embedding`` (every head
    reads the embedding) and ``best`` (each head at the depth ``best`` names). Heads are trained on
    the training identities' labelled faces and scored on the probe set's test people.
    """
    from craftlib.verification import evaluate

    y = attribute_matrix(labels, data.files, settings.attribute_objects())
    names = list(settings.attributes)
    designs = {
        "control": {a: "embedding" for a in names},
        "embedding": {a: "embedding" for a in names},
        "best": {a: best[a] for a in names},
    }
    out = {"branches": designs["best"], "configs": {}}
    base, ckpt = load_model(checkpoint)
    if ckpt.get("classes", list(data.classes)) != list(data.classes):
        raise ValueError(
            f"{checkpoint}: trained on {ckpt.get('num_classes')} identities that are not this "
            f"training "
            f"set's {data.num_classes}; fine-tuning needs the model's own training set"
        )
    out["verification_before"] = evaluate(base, pairs)["accuracy"]
    out["macs"] = macs_table(base, designs["best"], settings.pool)
    for name, branches in designs.items():
        start = time.perf_counter()
        trunk, ckpt = load_model(checkpoint)
        net = BranchingNet(trunk, branches, settings.pool)
        config = (
            replace(settings.finetune, attribute_weight=0.0)
            if name == "control"
            else settings.finetune
        )
        history = finetune(net, margin_head_from(ckpt), data, y, config)
        row = {
            "history": history,
            "verification": evaluate(net.trunk, pairs)["accuracy"],
            "heads": heads_report(net, probe_set, settings) if name != "control" else {},
            "seconds": time.perf_counter() - start,
        }
        out["configs"][name] = row
        if log is not None:
            log(
                f"    {name:<9} DevTest {fmt('accuracy', row['verification'])}  "
                f"({row['seconds']:.0f} s)"
            )
    return out


def record_path(out: str | Path, kind: str, arm: str, seed: int) -> Path:
    return Path(out) / "records" / f"{kind}-{arm}-s{seed}.json"


def write_record(
    out: str | Path,
    kind: str,
    arm: str,
    seed: int,
    body: dict,
    settings: StudySettings,
    model: dict,
) -> Path:
    record = {
        "kind": kind,
        "arm": arm,
        "seed": seed,
        "model": model,
        **body,
        "fingerprint": settings.fingerprint(),
    }
    return atomic_write(
        record_path(out, kind, arm, seed),
        lambda tmp: tmp.write_text(json.dumps(record, indent=None)),
    )


def load_records(out: str | Path, settings: StudySettings | None = None) -> list[dict]:
    """Every record of a study folder; with ``settings``, refuse records made under other
    settings."""
    records = [json.loads(p.read_text()) for p in sorted(Path(out).glob("records/*.json"))]
    if settings is not None:
        want = settings.fingerprint()
        for r in records:
            if r["fingerprint"] != want:
                raise ValueError(
                    f"{out}: {r['kind']}-{r['arm']}-s{r['seed']} was made with other settings; "
                    "use another --out folder"
                )
    return records


def find_models(folders: list[str | Path], arms, seeds) -> dict[tuple[str, int], Path]:
    """``<arm>-s<seed>.pt`` in the first folder that has it, for every (arm, seed) found
    anywhere."""
    found = {}
    for arm in arms:
        for seed in seeds:
            for folder in folders:
                path = Path(folder) / f"{arm}-s{seed}.pt"
                if path.is_file():
                    found[(arm, seed)] = path
                    break
    return found


@dataclass
class Study:
    """What a study run needs, loaded once: labels, probe set, training set and DevTest pairs."""

    settings: StudySettings
    labels: AttributeLabels
    probe_set: ProbeSet
    train: FaceSet
    pairs: PairSet
    extra: dict = field(default_factory=dict)


def prepare(settings: StudySettings, lfw=None, labels: AttributeLabels | None = None) -> Study:
    """Load LFW at the settings' size, the labels, the probe set (people never trained on) and
    DevTest."""
    from craftlib.data import LFW

    from .labels import load_labels, training_identities
    from .labels import probe_set as make_probe_set

    lfw = lfw or LFW(size=settings.size)
    labels = labels or load_labels()
    train = lfw.training_set(max_identities=settings.train_identities)
    probe = make_probe_set(
        lfw,
        labels,
        training_identities(lfw),
        settings.attribute_objects(),
        settings.max_per_identity,
        settings.max_identities,
        settings.test_fraction,
        settings.split_seed,
    )
    return Study(settings, labels, probe, train, lfw.pairs("devtest"))


def run_study(
    study: Study,
    models: dict[tuple[str, int], Path],
    out: str | Path,
    branching_seeds=(0,),
    reference_seeds=(0,),
    log=print,
) -> list[dict]:
    """Write every missing record of ``out``, in this order: probes of the reference model (its
    inner CV fixes every probe's C and the branch points), probes of the other models (seed-major,
    pairs first), branching of the standard models whose seed is in ``branching_seeds``, the
    untrained network's probes, branching of the other arms. Returns the folder's records."""
    s = study.settings
    load_records(out, s)  # refuse a folder made under other settings before adding to it
    atomic_write(
        Path(out) / "coverage.json",
        lambda tmp: tmp.write_text(
            json.dumps(
                {
                    "probe_set": repr(study.probe_set),
                    "coverage": study.probe_set.coverage,
                    "train_images": len(study.train.files),
                    "train_identities": study.train.num_classes,
                    "label_sources": study.labels.sources,
                    "label_folder_name": study.labels.folder.name,
                },
                indent=1,
            )
        ),
    )
    ref = s.reference_model
    ordered = sorted(
        models.items(),
        key=lambda kv: (f"{kv[0][0]}-s{kv[0][1]}" != ref, kv[0][1], kv[0][0] != "none", kv[0][0]),
    )  # the C source, then seed-major, pairs first
    if (
        ordered
        and f"{ordered[0][0][0]}-s{ordered[0][0][1]}" != ref
        and not record_path(out, "probe", *_split(ref)).is_file()
    ):
        raise ValueError(
            f"the probes' reference model {ref}.pt (whose cross-validation fixes C) is not among "
            f"the models"
        )
    tasks = [("probe", arm, seed, path) for (arm, seed), path in ordered]
    tasks += [
        ("branching", arm, seed, path)
        for (arm, seed), path in ordered
        if arm == "none" and seed in branching_seeds
    ]
    tasks += [("probe", REFERENCE_ARM, seed, None) for seed in reference_seeds]
    tasks += [
        ("branching", arm, seed, path)
        for (arm, seed), path in ordered
        if arm != "none" and seed in branching_seeds
    ]
    for (
        kind,
        arm,
        seed,
        path,
    ) in tasks:  # the footprint's pairs first, then the branching study, then the reference
        if record_path(out, kind, arm, seed).is_file():
            continue
        ref_record = record_path(out, "probe", *_split(ref))
        if kind == "probe":
            C = None
            if path is not None and f"{arm}-s{seed}" != ref:
                C = np.array(json.loads(ref_record.read_text())["probes"]["C"], dtype=float)
            _probe_task(study, arm, seed, path, out, log, C)
            continue
        probe = json.loads(ref_record.read_text())["probes"]
        best = {a: best_stage_cv(probe, a) for a in s.attributes}
        log(f"branching: {arm} seed {seed}, branches {best}")
        body = branching_record(
            path, study.train, study.labels, study.probe_set, study.pairs, best, s, log
        )
        write_record(
            out,
            "branching",
            arm,
            seed,
            body,
            s,
            {"source": path.name, "sha256_16": file_digest(path)},
        )
    return load_records(out, s)


def _split(name: str) -> tuple[str, int]:
    arm, seed = name.rsplit("-s", 1)
    return arm, int(seed)


def _probe_task(study: Study, arm: str, seed: int, path: Path | None, out, log, C=None) -> None:
    s = study.settings
    log(f"probes: {arm} seed {seed} ({path or 'untrained'})")
    if path is None:
        model, info = untrained_model(s, seed), {"source": "untrained FaceCNN", "seed": seed}
    else:
        model, _ = load_model(path)
        info = {"source": path.name, "sha256_16": file_digest(path)}
    if model.config.input_size != s.size:
        raise ValueError(
            f"{path}: a {model.config.input_size}px model; the study runs at {s.size}px"
        )
    body = probe_record(model, study.probe_set, study.pairs, study.labels, s, log, C)
    write_record(
        out,
        "probe",
        arm,
        seed,
        body,
        s,
        {**info, "C": "cross-validated" if C is None else s.reference_model},
    )


def best_stage_cv(probe: dict, attribute: str) -> str:
    """From a probe record: the stage with the best inner-CV score (training people only) for
    ``attribute``."""
    row = np.array(
        [
            np.nan if v is None else v
            for v in probe["cv_score"][probe["attributes"].index(attribute)]
        ]
    )
    return probe["stages"][int(np.nanargmax(row))]


# --------------------------------------------------------------------------------------------
# summaries


def _matrix(record: dict, key: str = "balanced_accuracy") -> np.ndarray:
    return np.array(
        [[np.nan if v is None else v for v in row] for row in record["probes"][key]], float
    )


def by_arm(records: list[dict], kind: str = "probe") -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in records:
        if r["kind"] == kind:
            out.setdefault(r["arm"], {})[r["seed"]] = r
    return out


def depth_curves(records: list[dict]) -> dict:
    """Per arm: mean and sd over seeds of each attribute x stage balanced accuracy, and the seeds
    used."""
    arms = by_arm(records)
    out = {}
    for arm, runs in arms.items():
        mats = np.stack([_matrix(r) for r in runs.values()])
        first = next(iter(runs.values()))["probes"]
        out[arm] = {
            "seeds": sorted(runs),
            "attributes": first["attributes"],
            "kinds": first["kinds"],
            "stages": first["stages"],
            "mean": np.nanmean(mats, 0),
            "sd": np.nanstd(mats, 0, ddof=1) if len(mats) > 1 else np.full(mats.shape[1:], np.nan),
        }
    return out


FIRST_SEEDS = tuple(range(5))
"""The seeds of the first report (the primary contrast at the stem was declared before they ran)."""
REPLICATION_SEEDS = tuple(range(5, 30))
"""A replication declared after the first report, before it ran: the same two contrasts (stem, block
1) on the main study's models of seeds 5-29, reported apart from seeds 0-4 (docs/RESULTS.md)."""


def footprint(
    records: list[dict], arm: str = "contextual", baseline: str = "none", seeds=None
) -> dict:
    """CRAFT minus standard, paired by seed (``seeds`` only, when given), for every attribute x
    stage (Holm across all cells), and the pre-declared primary contrast: mean balanced accuracy
    over the colour/texture attributes at the stem (and block 1)."""
    arms = by_arm(records)
    if arm not in arms or baseline not in arms:
        return {"seeds": [], "cells": {}, "primary": None}
    common = set(arms[arm]) & set(arms[baseline])
    seeds = sorted(common if seeds is None else common & set(seeds))
    if not seeds:
        return {"seeds": [], "cells": {}, "primary": None}
    a = np.stack([_matrix(arms[arm][s]) for s in seeds])
    b = np.stack([_matrix(arms[baseline][s]) for s in seeds])
    probe = arms[baseline][seeds[0]]["probes"]
    cells = {}
    for i, attr in enumerate(probe["attributes"]):
        for j, stage in enumerate(probe["stages"]):
            cells[(attr, stage)] = paired(a[:, i, j].tolist(), b[:, i, j].tolist())
    adjusted = holm({f"{k[0]}|{k[1]}": p.t_pvalue for k, p in cells.items()})
    for k, p in cells.items():
        p.holm_pvalue = adjusted[f"{k[0]}|{k[1]}"]
    colour = [i for i, k in enumerate(probe["kinds"]) if k == "colour/texture"]
    primary = {}
    for stage in ("stem", "block1"):
        j = probe["stages"].index(stage)
        primary[stage] = paired(a[:, colour, j].mean(1).tolist(), b[:, colour, j].mean(1).tolist())
    return {
        "seeds": seeds,
        "cells": cells,
        "primary": primary,
        "attributes": probe["attributes"],
        "stages": probe["stages"],
    }


def fairness(
    records: list[dict], group: str = "gender", arm: str = "contextual", baseline: str = "none"
) -> dict:
    """Per arm and group: DevTest accuracy, FNMR, FMR per seed; CRAFT - standard paired per group
    and for the gap."""
    arms = by_arm(records)
    out: dict = {"arms": {}, "paired": {}}
    for name, runs in arms.items():
        rows = {}
        for seed, r in sorted(runs.items()):
            g = r["verification"][group]
            for gname, v in g["groups"].items():
                row = rows.setdefault(
                    gname,
                    {
                        "accuracy": [],
                        "fnmr": [],
                        "fmr": [],
                        "pairs": v["pairs"],
                        "genuine": v["genuine"],
                        "impostor": v["impostor"],
                        "per_seed": [],
                    },
                )
                for metric in ("accuracy", "fnmr", "fmr"):
                    row[metric].append(v[metric]["rate"])
                row["per_seed"].append({m: v[m] for m in ("accuracy", "fnmr", "fmr")})
            rows.setdefault(
                "_mixed",
                {"pairs": g["mixed"]["pairs"], "genuine": g["mixed"]["genuine"], "fmr": []},
            )
            rows["_mixed"]["fmr"].append(g["mixed"]["fmr"]["rate"])
            rows["_overall"] = rows.get("_overall", []) + [g["accuracy"]]
            rows["_unlabelled"] = g["unlabelled_pairs"]
        out["arms"][name] = rows
    if arm in arms and baseline in arms:
        seeds = sorted(set(arms[arm]) & set(arms[baseline]))
        names = [k for k in out["arms"][baseline] if not k.startswith("_")]

        def per(a, gname, metric):
            return [
                arms[a][s]["verification"][group]["groups"][gname][metric]["rate"] for s in seeds
            ]

        for gname in names:
            out["paired"][gname] = {
                m: paired(per(arm, gname, m), per(baseline, gname, m))
                for m in ("accuracy", "fnmr", "fmr")
            }
        if len(names) == 2:
            gap = {
                a: [
                    x - y
                    for x, y in zip(per(a, names[0], "accuracy"), per(a, names[1], "accuracy"))
                ]
                for a in (arm, baseline)
            }
            out["gap"] = {
                "groups": names,
                arm: gap[arm],
                baseline: gap[baseline],
                "paired": paired(gap[arm], gap[baseline]),
            }
        out["seeds"] = seeds
    return out


def branching_summary(records: list[dict]) -> dict:
    """Per arm: heads' balanced accuracy at the embedding vs at the best depth, DevTest after each,
    MACs."""
    out = {}
    for arm, runs in by_arm(records, "branching").items():
        out[arm] = {"seeds": sorted(runs), "runs": runs}
    return out


def _mean_sd(values, signed: bool = False) -> str:
    """Mean ± sample sd over seeds in the project's format (a difference in points when
    ``signed``)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    mean = fmt("accuracy", float(np.mean(vals)), signed)
    return mean + ("" if sd is None else f" ± {fmt('accuracy', sd, signed).lstrip('+')}")


def _mac(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def depth_markdown(records: list[dict]) -> str:
    """Mean balanced accuracy per attribute x stage, one table per arm."""
    parts = []
    curves = depth_curves(records)
    for arm in [a for a in ("none", "contextual", REFERENCE_ARM) if a in curves]:
        c = curves[arm]
        head = "| attribute | kind | " + " | ".join(c["stages"]) + " | best (test) |"
        lines = [
            f"**{ARM_NAMES.get(arm, arm)}** — balanced accuracy on unseen people, mean over seeds "
            f"{c['seeds']} (chance 50%):",
            "",
            head,
            "|---|---|" + "---|" * (len(c["stages"]) + 1),
        ]
        for i, attr in enumerate(c["attributes"]):
            row = c["mean"][i]
            cells = [fmt("accuracy", None if np.isnan(v) else float(v)) for v in row]
            best = c["stages"][int(np.nanargmax(row))] if np.isfinite(row).any() else "n/a"
            lines.append(f"| {attr} | {c['kinds'][i]} | " + " | ".join(cells) + f" | {best} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def seed_ranges(seeds) -> str:
    """``0–29`` for seeds 0, 1, ..., 29; runs of consecutive seeds joined (``0–4, 7, 9–12``)."""
    seeds = sorted({int(s) for s in seeds})
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def footprint_markdown(records: list[dict], short_seeds: bool = False) -> str:
    """CRAFT - standard per attribute x stage with intervals, and the primary contrast.

    ``short_seeds`` names the seeds as ranges (``seeds 0–29``, for the notebook) instead of listing
    every one (``docs/RESULTS.md``'s committed tables list them).
    """
    fp = footprint(records)
    if not fp["seeds"]:
        return ""
    seeds = seed_ranges(fp["seeds"]) if short_seeds else fp["seeds"]
    lines = [
        f"**CRAFT − standard**, paired over seeds {seeds}: Δ balanced accuracy, 95% "
        f"t-interval "
        "(Holm-adjusted p over all attribute × stage cells, shown where < 0.05).",
        "",
        "| attribute | " + " | ".join(fp["stages"]) + " |",
        "|---|" + "---|" * len(fp["stages"]),
    ]
    for attr in fp["attributes"]:
        cells = []
        for stage in fp["stages"]:
            p = fp["cells"][(attr, stage)]
            cells.append(
                f"{fmt('accuracy', p.mean_difference, True)} {fmt_ci('accuracy', p.ci95)}"
                + (
                    f" (p {fmt('p', p.holm_pvalue)})"
                    if p.holm_pvalue is not None and p.holm_pvalue < 0.05
                    else ""
                )
            )
        lines.append(f"| {attr} | " + " | ".join(cells) + " |")
    for title, seeds in (
        ("Primary contrast (declared before the runs)", FIRST_SEEDS),
        ("Replication (declared after the first report, before it ran)", REPLICATION_SEEDS),
    ):
        part = footprint(records, seeds=seeds)
        if not part["seeds"]:
            continue
        lines += [
            "",
            f"{title}: mean balanced accuracy over the colour/texture attributes, CRAFT − "
            f"standard, "
            f"seeds {part['seeds'][0]}–{part['seeds'][-1]}:",
            "",
        ]
        for stage, p in part["primary"].items():
            lines.append(
                f"- {stage}: {fmt('accuracy', p.mean_difference, True)}, 95% CI "
                f"{fmt_ci('accuracy', p.ci95)}, "
                f"paired t p = {fmt('p', p.t_pvalue)}, Wilcoxon p = {fmt('p', p.wilcoxon_pvalue)} "
                f"(n = {p.n})"
            )
    return "\n".join(lines)


def fairness_markdown(records: list[dict], group: str = "gender") -> str:
    """Per-group DevTest verification per arm (mean ± sd over seeds), mixed pairs, and the paired
    gap."""
    fr = fairness(records, group)
    if not fr["arms"]:
        return ""
    arms = [a for a in ("none", "contextual", REFERENCE_ARM) if a in fr["arms"]]
    names = [g for g in fr["arms"][arms[0]] if not g.startswith("_")]
    lines = [
        f"**DevTest verification by {group}** (both faces in the group; one threshold per fold for "
        "everyone; mean ± sd over seeds):",
        "",
        "| group | pairs (genuine / impostor) | "
        + " | ".join(f"{ARM_NAMES.get(a, a)}: accuracy / FNMR / FMR" for a in arms)
        + " |",
        "|---|---|" + "---|" * len(arms),
    ]
    for g in names:
        r0 = fr["arms"][arms[0]][g]
        cells = [
            " / ".join(_mean_sd(fr["arms"][a][g][m]) for m in ("accuracy", "fnmr", "fmr"))
            for a in arms
        ]
        lines.append(
            f"| {g} | {r0['pairs']} ({r0['genuine']} / {r0['impostor']}) | "
            + " | ".join(cells)
            + " |"
        )
    mixed = fr["arms"][arms[0]]["_mixed"]
    lines.append(
        f"| mixed (impostors by construction) | {mixed['pairs']} ({mixed['genuine']} genuine) | "
        + " | ".join("FMR " + _mean_sd(fr["arms"][a]["_mixed"]["fmr"]) for a in arms)
        + " |"
    )
    lines.append(f"\nPairs with an unlabelled face: {fr['arms'][arms[0]]['_unlabelled']}.")
    if "gap" in fr:
        p = fr["gap"]["paired"]
        lines.append(
            f"Accuracy gap {fr['gap']['groups'][0]} − {fr['gap']['groups'][1]}: standard "
            f"{_mean_sd(fr['gap']['none'], True)}, CRAFT "
            f"{_mean_sd(fr['gap']['contextual'], True)}; "
            f"CRAFT − standard {fmt('accuracy', p.mean_difference, True)}, 95% CI "
            f"{fmt_ci('accuracy', p.ci95)}, paired t p = {fmt('p', p.t_pvalue)} (n = {p.n})."
        )
    return "\n".join(lines)


def group_markdown(result: dict, title: str = "") -> str:
    """One model's ``group_verification`` as a Markdown table with Wilson intervals."""

    def rate(r):
        if r["rate"] is None:
            return "n/a"
        return (
            f"{fmt('accuracy', r['rate'])} [{fmt('accuracy', r['ci95'][0])}, "
            f"{fmt('accuracy', r['ci95'][1])}]"
        )

    lines = ([f"**{title}**", ""] if title else []) + [
        "| group | pairs (genuine / impostor) | accuracy | FNMR (genuine rejected) | FMR "
        "(impostors accepted) |",
        "|---|---|---|---|---|",
    ]
    for name, g in result["groups"].items():
        lines.append(
            f"| {name} | {g['pairs']} ({g['genuine']} / {g['impostor']}) | {rate(g['accuracy'])} | "
            f"{rate(g['fnmr'])} | {rate(g['fmr'])} |"
        )
    m = result["mixed"]
    lines.append(
        f"| mixed | {m['pairs']} ({m['genuine']} / {m['pairs'] - m['genuine']}) | – | – | "
        f"{rate(m['fmr'])} |"
    )
    lines.append(
        f"\nAll pairs: accuracy {fmt('accuracy', result['accuracy'])}; "
        f"{result['unlabelled_pairs']} pairs have a face without this label."
    )
    return "\n".join(lines)


def branching_markdown(records: list[dict]) -> str:
    """Per branching record: heads at the embedding vs at the best depth, DevTest after each design,
    MACs."""
    parts = []
    for arm, b in branching_summary(records).items():
        for seed, r in sorted(b["runs"].items()):
            cfg = r["configs"]
            lines = [
                f"**Branching, {ARM_NAMES.get(arm, arm)} seed {seed}** — heads fine-tuned jointly "
                f"with the "
                f"identity loss ({r['fingerprint']['finetune']['epochs']} epochs); balanced "
                f"accuracy on unseen "
                "people, 95% bootstrap interval over people:",
                "",
                "| attribute | best depth (inner CV) | head at the embedding | head at the best "
                "depth |",
                "|---|---|---|---|",
            ]
            for attr, stage in r["branches"].items():
                e, b_ = cfg["embedding"]["heads"][attr], cfg["best"]["heads"][attr]
                lines.append(
                    f"| {attr} | {stage} | {fmt('accuracy', e['balanced_accuracy'])} "
                    f"[{fmt('accuracy', e['ci95'][0])}, {fmt('accuracy', e['ci95'][1])}] | "
                    f"{fmt('accuracy', b_['balanced_accuracy'])} "
                    f"[{fmt('accuracy', b_['ci95'][0])}, {fmt('accuracy', b_['ci95'][1])}] |"
                )
            lines += [
                "",
                f"DevTest accuracy: before fine-tuning "
                f"{fmt('accuracy', r['verification_before'])}; after the "
                f"identity-only control {fmt('accuracy', cfg['control']['verification'])}; with "
                f"heads at the "
                f"embedding {fmt('accuracy', cfg['embedding']['verification'])}; with heads at "
                f"their best depth "
                f"{fmt('accuracy', cfg['best']['verification'])}.",
            ]
            lines += ["", macs_markdown(r["macs"])]
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def macs_markdown(m: dict) -> str:
    """``branching.macs_table`` in one sentence."""
    return (
        f"MACs per face at {m['input_size']} px: face network {_mac(m['trunk'])}; one shared trunk "
        f"serving all "
        f"{m['attributes']} heads and the embedding {_mac(m['shared'])}; separate networks "
        f"truncated at each "
        f"branch {_mac(m['separate_truncated'])}; separate full networks "
        f"{_mac(m['separate_full'])} "
        f"({m['separate_full'] / m['shared']:.1f}× the shared trunk)."
    )


def render_markdown(records: list[dict]) -> str:
    """Every table of the study as Markdown: depth curves, CRAFT's footprint, per-group
    verification, branching."""
    parts = [depth_markdown(records), footprint_markdown(records)]
    parts += [fairness_markdown(records, g) for g in GROUPS]
    parts.append(branching_markdown(records))
    return "\n\n".join(p for p in parts if p)
