"""CoT generation (label-conditioned, sharded, resumable) and scoring / selection of the best candidate."""
