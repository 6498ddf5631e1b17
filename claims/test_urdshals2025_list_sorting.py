"""Urdshals & Urdshals 2025, "Structure Development in List-Sorting Transformers" (CLAIMS_CATALOGUE.md, section 4;
measurements in mechclaims/metrics/sorting_heads.py and copy_suppression.py).

The SORT claims run on the suite's own trained models, whatever --model names: families of five seeds of the
configurations in fixtures/sorting (mechclaims/training/sorting.py), trained on first use and cached. The paper's
training set-up is not available to us, so every hyperparameter is the suite's choice: one attention-only layer,
2 heads, d_model 48, learned positions, lists of 5 distinct numbers of 0-23, 4000 AdamW steps of 64 lists
(`ci`: weight decay 0.1; `ci-wd0`: 0). The heads' modes come from their OV circuits over the numbers
(list_sorting.classify_heads: the copied and suppressed sets, their Jaccard overlaps and coverage, and for
copy-suppression the correlation of the two heads' QK circuits). Every claim is
gated on the runs having learned to sort (held-out token accuracy >= 0.95 in every run). Nulls: the same family
untrained (`<family>/0`, the seeded initialisations), whose heads copy nothing in particular; and, for SORT-1 on
the CI configurations (where it is cheap: 10 more runs of about 12 s), the same family trained on shuffled targets
(`<family>/shuffled`: the second half is the list in a random order), whose heads learn to copy numbers but not to
sort them, so a mode they reach too is not about sorting (TRIVIAL).

Thresholds, all `suite` origin, fixed before any trained model was classified:
- SORT-1: at least 80% of the runs end in a simple mode (vocabulary-splitting or copy-suppression), on both
  weight decays (the issue's threshold); and, slow, on the catalogue's full configuration (`full`).
- SORT-2: vocabulary-splitting in at least one of the five weight-decay-0 runs (the catalogue's reading).
- SORT-3 (slow): over three mean gaps (lists from 10, 16 or 24 consecutive numbers: gaps 1.83, 2.83, 4.17),
  some mode's fraction of runs changes by at least 0.4 (two of five runs). Dependence, not direction.
- SORT-4 (slow): in at least 80% of the runs that pass through an overlapping-ranges stage, the Local Learning
  Coefficient at the last checkpoint is below the LLC at the end of that stage (the last checkpoint before the
  final one whose heads overlap), i.e. fraction_below(0) >= 0.8 of the LLC changes. LLC: devinterp's SGLD
  estimate at each of the 16 saved checkpoints, step size 1e-4, n beta 100, localisation 100, 2 chains of 100
  draws of 64 lists (chosen on one run of `ci` for stable, positive estimates: spread over chains about 5% of
  the value; parameters of the claim). N/A when no run shows the stage. No null: a training trajectory has no
  random counterpart; the report draws every run's LLC curve with its spread over chains.
- SORT-5: in at least 80% of the copy-suppression runs, zeroing the suppressing head raises the mean max
  probability and the expected calibration error on held-out lists. N/A when no run ends in copy-suppression.
  Null: zeroing the copying head instead.
- CS-GPT2: GPT-2 small's head 10.7 ranks the token it attends to in the bottom 10 of its OV row for at least half
  of 2000 sampled tokens (the catalogue's "most tokens"); N/A on other models. The same statistic over every head
  of any model is report-only: its verdict says the heads were measured, and the table lists the most
  copy-suppressing heads beside the `random:` model's largest fraction.

Disclosure: the classifier's minimum shared range (list_sorting.MIN_RANGE) was added after an initialisation's
chance overlap of 2 numbers read as copy-suppression; no trained run's mode changed with it.

Regression tolerances: 0 for the fractions of runs (one run changing mode moves them by 0.2, which is a change of
finding, not noise), 0.01 for CS fractions.
"""

from mechclaims.claim import Claim, Gate, Threshold
from mechclaims.metrics import copy_suppression, sorting_heads
from mechclaims.nulls import MeasurementNull

PAPER = "urdshals2025"
SEEDS = "@0-4"
DECAYED = f"sorting:ci{SEEDS}"
UNDECAYED = f"sorting:ci-wd0{SEEDS}"
BY_GAP = f"sorting:ci-window10+ci-window16+ci{SEEDS}"
LEARNED = Gate("min_accuracy", ">=", 0.95, "a run of this family did not learn to sort held-out lists")
RUNS = "fraction_at_least"


def _simple_modes(name: str, subjects: tuple[str, ...], slow: bool, null: str, rationale: str) -> Claim:
    """SORT-1 on `subjects`: at least 80% of the runs end in vocabulary-splitting or copy-suppression."""
    return Claim(
        id=f"{PAPER}.{name}",
        paper=PAPER,
        section="SORT-1 (final head modes)" + ("; slow" if slow else ""),
        statement="At the end of training the heads are in a simple mode, vocabulary-splitting or copy-suppression, "
        "not overlapping ranges, in at least 80% of seeds.",
        measure=sorting_heads.head_modes,
        params={"mode": "simple"},
        subjects=subjects,
        gate=LEARNED,
        threshold=Threshold(statistic=RUNS, at=1.0, op=">=", value=0.8, origin="suite"),
        null=null,
        tolerance=0.0,
        slow=slow,
        rationale=rationale,
    )


CLAIMS = [
    _simple_modes("simple_head_modes", (DECAYED, UNDECAYED), False, "shuffled_targets",
                  "The share of runs in a simple mode; the runs table gives each run's overlaps and coverage, and the "
                  "figures each head's OV diagonal and the training losses."),
    _simple_modes("simple_head_modes_full_configuration", (f"sorting:full{SEEDS}",), True, "untrained",
                  "The catalogue's suggested set-up (64 numbers, lists of 10, d_model 128, 20 000 steps of 256 lists): "
                  "about 18 minutes of training per run on 2 cores, 90 for the five. Run with --slow-claims."),
    Claim(
        id=f"{PAPER}.vocabulary_splitting_without_weight_decay",
        paper=PAPER,
        section="SORT-2 (splitting without weight decay)",
        statement="Vocabulary-splitting appears with weight decay 0: in at least one of five runs.",
        measure=sorting_heads.head_modes,
        params={"mode": "vocabulary-splitting"},
        subjects=(UNDECAYED,),
        gate=LEARNED,
        threshold=Threshold(statistic=RUNS, at=1.0, op=">", value=0.0, origin="suite"),
        null="untrained",
        tolerance=0.0,
    ),
    Claim(
        id=f"{PAPER}.head_mode_depends_on_mean_gap",
        paper=PAPER,
        section="SORT-3 (the mean gap decides the mode; slow)",
        statement="The mode the heads end in depends on the mean gap between adjacent sorted numbers: some mode's "
        "share of runs changes by at least 0.4 across three gaps.",
        measure=sorting_heads.mode_by_gap,
        subjects=(BY_GAP,),
        gate=LEARNED,
        threshold=Threshold(statistic="largest_change", op=">=", value=0.4, origin="suite"),
        null="untrained",
        tolerance=0.0,
        slow=True,
        rationale="15 training runs (about 3 minutes on 2 cores). Run with --slow-claims.",
    ),
    Claim(
        id=f"{PAPER}.learning_coefficient_falls_after_overlap",
        paper=PAPER,
        section="SORT-4 (developmental stages, LLC; slow)",
        statement="The Local Learning Coefficient at the end of training is below the LLC at the end of the "
        "overlapping-ranges stage: the heads' specialisation is a simplification.",
        measure=sorting_heads.learning_coefficient_stages,
        subjects=(DECAYED,),
        gate=Gate("overlap_runs", ">=", 1, "no run of this family passes through an overlapping-ranges stage"),
        threshold=Threshold(statistic="fraction_below", at=0.0, op=">=", value=0.8, origin="suite"),
        null=None,
        tolerance=0.0,
        slow=True,
        rationale="80 LLC estimates (16 checkpoints of 5 runs; about 3 minutes on 2 cores). Run with --slow-claims.",
    ),
    Claim(
        id=f"{PAPER}.suppressor_ablation_raises_confidence",
        paper=PAPER,
        section="SORT-5 (copy-suppression calibrates)",
        statement="Ablating the suppressing head of a copy-suppression model raises its confidence and worsens its "
        "calibration (in at least 80% of the copy-suppression runs).",
        measure=sorting_heads.suppressor_ablation,
        subjects=(DECAYED, UNDECAYED),
        gate=Gate("suppression_runs", ">=", 1, "no run of this family ended in copy-suppression"),
        threshold=Threshold(statistic=RUNS, at=1.0, op=">=", value=0.8, origin="suite"),
        null=MeasurementNull("ablate", "copying"),
        tolerance=0.0,
    ),
    Claim(
        id=f"{PAPER}.gpt2_head_10_7_suppresses_copies",
        paper=PAPER,
        section="CS-GPT2 (copy suppression in GPT-2)",
        statement="GPT-2 small's head 10.7 suppresses the token it attends to: its own logit is in the bottom 10 of "
        "its OV row for at least half of the sampled tokens.",
        measure=copy_suppression.copy_suppression_heads,
        params={"head": "10.7"},
        needs=frozenset({"gpt2_small"}),
        threshold=Threshold(statistic="head_fraction", op=">=", value=0.5, origin="suite"),
        null="random_model",
        rationale="head_rank says where 10.7 stands among the 144 heads; the table lists the top ten.",
    ),
    Claim(
        id=f"{PAPER}.most_copy_suppressing_heads",
        paper=PAPER,
        section="CS-GPT2 (every head, report-only)",
        statement="The same weights-only statistic on every head: the report lists the most copy-suppressing heads.",
        measure=copy_suppression.copy_suppression_heads,
        threshold=Threshold(statistic="max_fraction", op=">=", value=0.0, origin="suite"),
        null="random_model",
        trivial_if_null_passes=False,
        rationale="Report-only: the verdict says only that every head was measured; compare max_fraction with the "
        "random: model's and with chance (bottom / sample).",
    ),
]
