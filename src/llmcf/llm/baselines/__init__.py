"""The LLM stages of the baselines: the KD teacher's p(Yes) (``kd``) and KAR's user/item texts (``kar``)."""
