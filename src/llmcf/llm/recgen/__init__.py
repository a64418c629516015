"""RecGen: instruction data, LoRA / full fine-tuning and evaluation of the LLM as a recommender."""
