"""llmcf: LLM-CF (Large Language Models Enhanced Collaborative Filtering, CIKM 2024) as a library and CLI."""
__version__ = "0.1.0"
