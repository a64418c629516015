"""Offline LLM stage: generation backends, RecGen instruction tuning, CoT generation and selection."""
