"""The studies: each tests published claims about normalization on real data and ends in verdicts.

``run_study(name, profile)`` trains a study's runs through the sweep (parallel, resumable), analyzes them and
writes ``<home>/studies/<name>/result.json`` (schema in :mod:`normlab.lab.studies.framework`); ``normlab study``
is the command and ``normlab report`` renders the results.

=============  ===========================================================================================
study          claims
=============  ===========================================================================================
convergence    BN/LN/GN speed up convergence over no normalization; normalization allows higher learning rates
batch_size     BatchNorm breaks down at small batches while GroupNorm and LayerNorm do not (Wu & He 2018)
weight_norm    scale-invariant weights grow in norm as predicted; weight decay holds them down
adversarial    BatchNorm and weight growth amplify adversarial attacks
pruning        network slimming by BN's γ removes parameters with little accuracy loss (Liu et al. 2017)
transformer    Transformers need LayerNorm/RMSNorm; RMSNorm matches LayerNorm and is cheaper
speed          the cost and memory of each normalization, measured by ``normlab bench``
=============  ===========================================================================================

Examples:
    >>> STUDY_NAMES[0], get_profile("smoke").conclusive
    ('convergence', False)
"""
from .framework import (SCHEMA, SCHEMA_VERSION, STUDY_NAMES, PlannedRun, Study, StudyContext, StudyOutput, get_study,
                        read_result, result_path, run_study)
from .profiles import PROFILE_NAMES, PROFILES, Profile, get_profile
from .stats import Effect, Summary, bootstrap_interval, paired_interval, summarize, welch_interval
from .verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, exceeds, within

__all__ = ["SCHEMA", "SCHEMA_VERSION", "STUDY_NAMES", "PROFILE_NAMES", "PROFILES", "Profile", "PlannedRun", "Study",
           "StudyContext", "StudyOutput", "get_study", "get_profile", "read_result", "result_path", "run_study",
           "Effect", "Summary", "summarize", "welch_interval", "paired_interval", "bootstrap_interval", "Verdict",
           "exceeds", "within", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE"]
