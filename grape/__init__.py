"""GRAPE suite: pick, per target model, the instruction-tuning responses that fit it best.

One module per stage (data, models, sample, verify, score, select, sft, evaluate, report); shared
pieces live in config, io, provenance, template and runtime. `grape.cli` exposes every stage.
"""

__version__ = "0.1.0"
