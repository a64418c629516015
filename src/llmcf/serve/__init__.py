"""Online serving of LLM-CF: ``Scorer`` (Python API: load a trained model of a run directory, score and explain
requests) and the HTTP app (``create_app``, ``serve``; `llmcf serve`). The LLM is never called online: a request is
in-context retrieval from the offline CoT bank, then the ICT module and the CTR backbone."""
from llmcf.serve.scorer import ONLINE_POS, Scorer, ScoreResult

__all__ = ["ONLINE_POS", "Scorer", "ScoreResult"]
