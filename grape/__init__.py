"""GRAPE suite: pick, per target model, the instruction-tuning responses that fit it best.

One module, or one folder when it has several files, per stage (data, models, sample, verify, score, select, sft,
evaluate, report); the modules at the top level are shared by several stages (docs/architecture.md lists each).
`grape.cli` exposes every stage.
"""

__version__ = "0.1.0"
