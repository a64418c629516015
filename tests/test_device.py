"""Device choice (train.device / serve.device), gradient clipping and mixed precision in the shared trainer (CPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcf.config import ConfigError, TrainConfig
from llmcf.train.device import resolve_device, to_device
from llmcf.train.loop import early_stopping_fit

torch.set_num_threads(1)


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"serve.device={name}: CUDA is not available"):
            resolve_device(name, "serve.device")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_fit_refuses_cuda_it_does_not_have(monkeypatch):
    from llmcf.train.trainer import fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device=cuda"):
        fit(nn.Linear(2, 1), [], [], None, TrainConfig(device="cuda"), progress=False)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def forward(self, batch):
        return {"logit": self.lin(batch["x"]).squeeze(-1) * 100.0, "losses": {}}


def _fit(grad_clip=None, amp=False, seen=None):
    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(16, 4, generator=g), "label": torch.randint(0, 2, (16,), generator=g).float()}
               for _ in range(3)]
    model = _Toy()

    def loss(m, batch, out):
        if seen is not None:
            seen.append(out["logit"].dtype)
        return F.binary_cross_entropy_with_logits(out["logit"].float(), batch["label"])

    early_stopping_fit(model, torch.optim.SGD(model.parameters(), lr=1e-3), batches, batch_loss=loss,
                       validate=lambda m: {"auc": 0.5}, stop_metric="auc", max_epochs=1, patience=1,
                       loss_name="bce", epoch_line=lambda r, m: "", progress=False, grad_clip=grad_clip, amp=amp)
    # the last step's gradients are still on the parameters (zero_grad runs at the start of a step)
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_grad_clip_bounds_the_gradient_norm():
    free = _fit()
    assert free > 1.0  # large gradients (logits scaled by 100) ...
    assert _fit(grad_clip=0.5) == pytest.approx(0.5, rel=1e-4)  # ... clipped to the bound


def test_amp_runs_the_forward_in_bfloat16_on_cpu():
    seen = []
    _fit(amp=True, seen=seen)
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    _fit(amp=False, seen=seen)
    assert set(seen) == {torch.float32}


def test_to_device_keeps_a_batch_already_there():
    b = {"x": torch.zeros(2)}
    assert to_device(b, torch.device("cpu")) is b
