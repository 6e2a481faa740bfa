"""lm-eval task YAMLs of ours (`--include_path`) and the Python they name (`!function`)."""
